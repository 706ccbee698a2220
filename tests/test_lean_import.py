"""`edgecompress --help` and `targets` must stay fast: no heavy backend is imported for them."""
import subprocess
import sys

HEAVY = ("torch", "onnxruntime", "onnx", "torch_pruning", "sklearn", "numpy")


def imported_after(code: str) -> set:
    probe = (f"import sys\n{code}\n"
             f"print('LOADED=' + ','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    line = [ln for ln in out.stderr.splitlines() if ln.startswith("LOADED=")][-1]
    return set(filter(None, line[len("LOADED="):].split(",")))


def test_cli_help_imports_no_backend():
    code = "from edgecompress import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass"
    assert imported_after(code) == set()


def test_targets_listing_imports_no_backend():
    assert imported_after("from edgecompress import cli\ncli.main(['targets'])") == set()
