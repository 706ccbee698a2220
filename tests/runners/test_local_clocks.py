"""A local job keeps the jetson_clocks store outside its job folder (the folder goes with the job, so a
SIGKILLed local job on a Jetson would leave nothing for the next job to restore from)."""
import json
import os
import stat
import sys

from edgecompress.runners import local


def test_a_local_job_is_told_a_lasting_private_folder_for_the_clocks_store(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGECOMPRESS_CLOCKS_DIR", raising=False)
    script = "import json, os; print(json.dumps({'dir': os.environ.get('EDGECOMPRESS_CLOCKS_DIR')}))"
    code, streams = local.run_process([sys.executable, "-c", script], tmp_path, None, 30)
    assert code == 0
    told = json.loads(streams.stdout[-1])["dir"]
    assert told == str(tmp_path / "cache" / "clocks") and not told.startswith(str(tmp_path / "job"))
    assert stat.S_IMODE(os.stat(told).st_mode) == 0o700
