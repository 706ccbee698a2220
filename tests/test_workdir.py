"""Ctrl-C outside distillation says exactly what it kept (the walkthrough: 'a distillation checkpoint,
if one was saved, is kept', with an empty .work folder left in --out)."""
from ecutil import fast_sets, run_cli


def _raise(*_, **__):
    raise KeyboardInterrupt


def test_ctrl_c_before_any_checkpoint_says_so_and_leaves_no_work_folder(tmp_path, model_file, npz_data, monkeypatch):
    from edgecompress import compress

    monkeypatch.setattr(compress, "_prune_round_", _raise)
    code, _, err = run_cli("deploy", f"{model_file}:build", "--target", "host-cpu", "--data", npz_data,
                           "--out", tmp_path / "o", *fast_sets())
    assert code == 130 and "no distillation checkpoint had been saved yet: the same command starts over" in err
    assert not (tmp_path / "o" / ".net-host-cpu.work").exists()


def test_ctrl_c_after_distillation_names_the_kept_checkpoint(tmp_path, model_file, npz_data, monkeypatch):
    from edgecompress import export

    monkeypatch.setattr(export, "export_onnx", _raise)
    code, _, err = run_cli("deploy", f"{model_file}:build", "--target", "host-cpu", "--data", npz_data,
                           "--out", tmp_path / "o", *fast_sets())
    checkpoint = tmp_path / "o" / ".net-host-cpu.work" / "checkpoint.pt"
    assert code == 130 and f"the distillation progress in {checkpoint} is kept" in err and checkpoint.is_file()
