"""End to end through the command line on real bundled data: pretrain -> eval -> export."""
import json

from typer.testing import CliRunner

from medvlp.cli import app

runner = CliRunner()


def _ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_pretrain_eval_export(tmp_path):
    out = tmp_path / "run"
    _ok(runner.invoke(app, ["pretrain", "--out", str(out), "--set", "data.dataset=breastmnist",
                            "--set", "train.max_steps=3", "--set", "train.batch_size=16",
                            "--set", "train.progress=false", "--set", "model.name=vit_tiny_p4_28"]))
    assert (out / "config.yaml").is_file() and (out / "metrics.jsonl").is_file()
    meta = json.loads((out / "model" / "metadata.json").read_text())
    assert meta["method"] == "supervised" and meta["train"]["steps"] == 3

    ev = tmp_path / "eval"
    text = _ok(runner.invoke(app, ["eval", str(out / "model"), "--datasets", "breastmnist", "--out", str(ev)]))
    assert "macro-AUC" in text
    res = json.loads((ev / "results.json").read_text())
    auc = res["datasets"]["breastmnist"]["protocols"]["logreg"]["summary"]["macro_auc"]["mean"]
    assert 0.0 <= auc <= 1.0
    assert (ev / "report.html").read_text().count("data:image/png;base64,") >= 1

    exp = tmp_path / "export"
    _ok(runner.invoke(app, ["export", str(out / "model"), "--out", str(exp)]))
    assert {"config.json", "model.safetensors", "preprocess.json", "metadata.json", "model.onnx"} <= {
        p.name for p in exp.iterdir()}


def test_unknown_config_key_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["pretrain", "--out", str(tmp_path), "--set", "train.epochz=3"])
    assert result.exit_code != 0
    assert "epochz" in str(result.exception)


def test_models_and_datasets_lists():
    assert "vit_tiny_p4_28" in _ok(runner.invoke(app, ["models", "vit_*"]))
    assert "pneumoniamnist" in _ok(runner.invoke(app, ["datasets"]))
