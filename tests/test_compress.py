"""compress.run on a user's model: pruned and distilled with the records saying how, resumable to the
same student, and an .onnx input taken as it is."""
import numpy as np
import torch

from ecutil import MODEL_SRC, make_data, train_weights


def _inputs(tmp_path, target="host-cpu", *sets):
    from edgecompress import inputs
    from edgecompress.pipeline import DeployOptions

    (tmp_path / "net.py").write_text(MODEL_SRC)
    x, y = make_data(300)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    weights = train_weights(tmp_path / "w.pt", x, y)
    run = inputs.load_and_check(DeployOptions(model=f"{tmp_path / 'net.py'}:build", weights=str(weights),
                                              data=str(tmp_path / "d.npz"), target=target, out=tmp_path / "o",
                                              overrides=["distill.steps=30", "verify.samples=40", *sets]))
    run.work.mkdir(parents=True)
    return run


def test_the_student_is_pruned_and_distilled_and_the_records_say_so(tmp_path):
    from edgecompress import compress

    run = _inputs(tmp_path)
    c = compress.run(run, resume=False)
    p = c.pruning
    assert (p.structure, p.ratio, p.iterative_steps) == ("channel", 0.5, 1)
    assert p.params_before == sum(t.numel() for t in c.original.parameters())
    assert p.params_after == sum(t.numel() for t in c.student.parameters()) < p.params_before / 2
    assert c.distillation.steps == 30 and c.distillation.teacher == "the unpruned model"
    assert c.distillation.teacher_params == p.params_before and len(c.distillation.loss_curve) > 0
    assert c.output_names == ["output"] and c.reference[0].shape == (40, 4)
    with torch.no_grad():
        assert np.allclose(c.reference[0], c.student(torch.from_numpy(run.held.x)).numpy(), atol=1e-5)
    assert (run.work / "checkpoint.pt").is_file() and not list(run.work.glob("*.onnx"))  # no runtime file yet


def test_resume_from_the_finished_checkpoint_gives_the_same_student(tmp_path):
    from edgecompress import compress

    run = _inputs(tmp_path)
    first = compress.run(run, resume=False)
    again = compress.run(run, resume=True)
    assert first.pruning == again.pruning
    for a, b in zip(first.student.state_dict().values(), again.student.state_dict().values()):
        assert torch.equal(a, b)


def test_an_onnx_input_is_not_compressed(tmp_path):
    from edgecompress import compress, inputs
    from edgecompress.pipeline import DeployOptions

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 4)).eval()
    torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(tmp_path / "m.onnx"), dynamo=False,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "b"}})
    x, y = make_data(300)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    run = inputs.load_and_check(DeployOptions(model=str(tmp_path / "m.onnx"), data=str(tmp_path / "d.npz"),
                                              target="arm", out=tmp_path / "o"))
    run.work.mkdir(parents=True)
    c = compress.run(run, resume=False)
    assert c.student is None and c.onnx_file == run.work / "original.onnx" and c.output_names == ["logits"]
    assert c.reference is c.reference_original and c.pruning.to_dict()["structure"] == "none"
    assert c.pruning.params_before == c.pruning.params_after == 4 * 9 + 4 + 144 * 4 + 4  # the file's weight values
    assert c.distillation.to_dict() == {"steps": 0, "seconds": 0.0, "final_loss": None,
                                        "note": "ONNX input: not distilled"}
