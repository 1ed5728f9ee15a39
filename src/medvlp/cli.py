"""The ``medvlp`` command line. It only wires the library together; every verb has a Python
equivalent (see README)."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from medvlp.errors import MedvlpError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Pretrain, adapt, evaluate and export medical imaging backbones.")

DataRoot = typer.Option(None, "--data-root", help="Folder with the real data sets (else $MEDVLP_DATA, "
                                                  "else ../shared/data, else the bundled sets).")


def _set_data_root(data_root: Optional[str]) -> Optional[str]:
    if data_root:
        os.environ["MEDVLP_DATA"] = str(Path(data_root).resolve())
    return data_root


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="Output folder."),
         epochs: int = typer.Option(10, help="VIVID-Med pretraining epochs."),
         seed: int = typer.Option(0),
         data_root: Optional[str] = DataRoot) -> None:
    """Pretrain, probe, compare with published numbers, export and report — offline, in minutes."""
    from medvlp.demo import run_demo

    run_demo(out, data_root=_set_data_root(data_root), epochs=epochs, seed=seed)


@app.command()
def pretrain(config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config."),
             set_: list[str] = typer.Option([], "--set", help="Override: key=value (dotted keys)."),
             method: Optional[str] = typer.Option(None, help="Shortcut for --set method.name=..."),
             out: Optional[Path] = typer.Option(None, help="Shortcut for --set out_dir=..."),
             resume: bool = typer.Option(False, "--resume", help="Continue from out_dir/checkpoint.pt."),
             data_root: Optional[str] = DataRoot) -> None:
    """Pretrain a backbone with a method; writes config, metrics.jsonl, checkpoint and model folder."""
    from medvlp.config import load_config
    from medvlp.train.pretrain import PretrainConfig, run_pretrain

    overrides = list(set_)
    if method:
        overrides.append(f"method.name={method}")
    if out:
        overrides.append(f"out_dir={out}")
    if data_root:
        overrides.append(f"data.root={_set_data_root(data_root)}")
    cfg = load_config(PretrainConfig, config, overrides)
    model_dir, result = run_pretrain(cfg, resume=resume)
    typer.echo(json.dumps({"model": str(model_dir), "steps": result.steps, "final": result.final}, indent=2))


@app.command()
def adapt(config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config."),
          set_: list[str] = typer.Option([], "--set", help="Override: key=value (dotted keys)."),
          method: Optional[str] = typer.Option(None, help="vip (default), vip_cop, vip_cop_max, vip_mep, "
                                                          "coop, zeroshot_names, zeroshot_symptoms."),
          encoder: Optional[str] = typer.Option(None, help="Dual encoder: medvlp:<folder>, "
                                                           "open_clip:<name[@tag]|folder>, hf-clip:<name|folder>."),
          symptoms: Optional[str] = typer.Option(None, help="Symptom JSON (medvlp symptoms ...) or a curated set name."),
          dataset: Optional[str] = typer.Option(None, help="Dataset name, CSV manifest or image folder."),
          shots: Optional[str] = typer.Option(None, help="Labelled images per class, or 'full'."),
          out: Optional[Path] = typer.Option(None, help="Output folder."),
          data_root: Optional[str] = DataRoot) -> None:
    """Few-shot prompt learning (ViP, CoOp) or zero-shot on a frozen dual encoder; writes
    metrics.json, prompts.safetensors and report.html (symptoms with their learned merge weights)."""
    from medvlp.config import load_config
    from medvlp.train.adapt import AdaptConfig, run_adapt

    overrides = list(set_)
    for key, value in (("method", method), ("encoder", encoder), ("symptoms", symptoms),
                       ("data.dataset", dataset), ("data.shots", shots), ("out_dir", out)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if data_root:
        overrides.append(f"data.root={_set_data_root(data_root)}")
    cfg = load_config(AdaptConfig, config, overrides)
    result = run_adapt(cfg)
    m = result["metrics"]
    typer.echo(json.dumps({"method": result["label"], "dataset": result["dataset"], "shots": result["shots"],
                           "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "out": cfg.out_dir,
                           "parts_used": result["parts_used"]}, indent=2))


@app.command("eval")
def eval_(model: str = typer.Argument(..., help="Model folder, or a registry name (random init)."),
          datasets: Optional[str] = typer.Option(None, help="Comma-separated dataset names (default: "
                                                 "pneumoniamnist,breastmnist; segmentation: cxr_lung_seg,busi)."),
          protocols: str = typer.Option("logreg", help="Comma-separated: logreg, torch_linear, knn."),
          seeds: str = typer.Option("0", help="Comma-separated seeds."),
          out: Path = typer.Option(Path("runs/eval"), help="Output folder."),
          task: str = typer.Option("classify", "--task",
                                   help="classify (frozen-feature probes), segmentation (U-Net transfer), "
                                        "vqa or report (a ct3d model folder)."),
          fractions: str = typer.Option("0.01,0.1,1.0", help="segmentation: label fractions of the train split."),
          img_size: Optional[int] = typer.Option(None, help="segmentation: input size (default: the encoder's)."),
          epochs: int = typer.Option(20, help="segmentation: decoder training epochs."),
          finetune_encoder: bool = typer.Option(False, "--finetune-encoder",
                                                help="segmentation: train the encoder too (default: frozen)."),
          volume: Optional[Path] = typer.Option(None, help="vqa/report: NIfTI file, DICOM file or DICOM folder; "
                                                           "omitted: score the derived CT VQA test split."),
          question: Optional[str] = typer.Option(None, help="vqa with --volume: the question."),
          limit: Optional[int] = typer.Option(None, help="vqa/report without --volume: items per task and source."),
          data_root: Optional[str] = DataRoot) -> None:
    """Evaluate a model: frozen-feature probes (classify), or CT VQA / report generation (ct3d models);
    writes results.json (+ report.html for classify)."""
    if task in ("vqa", "report"):
        from medvlp.eval.vqa import run_ct_eval

        res = run_ct_eval(model, task, volume, question, _set_data_root(data_root), limit=limit)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
        typer.echo(res["answer"] if "answer" in res else json.dumps(res["results"], indent=1, default=str)[:4000])
        typer.echo(f"results: {out / 'results.json'}")
        return
    if task == "segmentation":
        _set_data_root(data_root)
        return _eval_segmentation(model, datasets or "cxr_lung_seg,busi", fractions, seeds, img_size, epochs,
                                  finetune_encoder, out, data_root)
    if task != "classify":
        raise typer.BadParameter(f"--task {task!r}: expected classify, segmentation, vqa or report")
    datasets = datasets or "pneumoniamnist,breastmnist"
    from medvlp.data import load_dataset
    from medvlp.eval.protocol import evaluate_backbone
    from medvlp.eval.report import write_html_report
    from medvlp.models import create_model, from_pretrained

    _set_data_root(data_root)
    backbone = from_pretrained(model) if Path(model).is_dir() else create_model(model)
    sets = [load_dataset(n.strip(), root=data_root) for n in datasets.split(",") if n.strip()]
    rep = evaluate_backbone(backbone, sets, protocols=tuple(p.strip() for p in protocols.split(",")),
                            seeds=tuple(int(s) for s in seeds.split(",")))
    out.mkdir(parents=True, exist_ok=True)
    rep.save_json(out / "results.json")
    write_html_report(out / "report.html", title=f"medvlp eval: {model}", sections=rep.report_sections())
    for name, ds in rep.to_json()["datasets"].items():
        for proto, p in ds["protocols"].items():
            summ = p["summary"]
            auc = summ.get("macro_auc", {})
            typer.echo(f"{name:22s} {proto:8s} macro-AUC {auc.get('mean', float('nan')):.4f} "
                       f"± {auc.get('std', 0.0):.4f} (n_seeds={auc.get('n', 0)})")
    typer.echo(f"results: {out / 'results.json'}  report: {out / 'report.html'}")


def _eval_segmentation(model, datasets, fractions, seeds, img_size, epochs, finetune_encoder, out, data_root):
    from medvlp.bench.common import json_default
    from medvlp.eval.segmentation import run_segmentation_eval

    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in [n.strip() for n in datasets.split(",") if n.strip()]:
        res = run_segmentation_eval(model, name, tuple(float(f) for f in fractions.split(",")),
                                    seeds=tuple(int(s) for s in seeds.split(",")), img_size=img_size,
                                    epochs=epochs, freeze_encoder=not finetune_encoder, data_root=data_root)
        results[name] = res
        for f, s in res["summary"].items():
            typer.echo(f"{name:16s} {float(f) * 100:5g} % labels  Dice {s['dice_mean']:.4f} ± {s['dice_std']:.4f}  "
                       f"IoU {s['iou_mean']:.4f} (n_seeds={s['n_seeds']})")
    (out / "segmentation.json").write_text(json.dumps(results, indent=2, default=json_default))
    typer.echo(f"results: {out / 'segmentation.json'}")


@app.command()
def export(model: Path = typer.Argument(..., help="Model folder to export."),
           out: Path = typer.Option(..., help="Destination folder."),
           onnx: bool = typer.Option(True, help="Also write model.onnx with a parity check.")) -> None:
    """Export a model folder as a deployable folder (safetensors, config, preprocessing, ONNX)."""
    from medvlp.export import export_folder
    from medvlp.models import from_pretrained

    info = export_folder(from_pretrained(model), out, onnx=onnx)
    typer.echo(json.dumps(info, indent=2, default=str))


lm_app = typer.Typer(no_args_is_help=True, help="The offline report LM (VIVID-Med's frozen teacher).")
app.add_typer(lm_app, name="lm")


@lm_app.command("train")
def lm_train(out: Path = typer.Option(..., "--out", help="Output folder (the package ships src/medvlp/models/reportlm)."),
             set_: list[str] = typer.Option([], "--set", help="ReportLMConfig override key=value, e.g. time_budget_s=1800."),
             data_root: Optional[str] = DataRoot) -> None:
    """Train the offline report LM on IU X-ray report text + UMS JSON (<= ~15 min on 2 idle CPU cores)."""
    from medvlp.config import parse_override
    from medvlp.train.reportlm import run_lm_train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    options = {}
    for item in set_:
        keys, value = parse_override(item)
        options[".".join(keys)] = value
    meta = run_lm_train(out, root=_set_data_root(data_root), **options)
    keys = ("params", "size_bytes", "steps", "stopped_by", "train_time_s", "final_train_loss", "final_val_loss")
    summary = {k: meta[k] for k in keys}
    summary["greedy_json"] = {k: meta["greedy_json"][k] for k in ("n", "json_valid_rate", "schema_valid_rate", "by_kind")
                              if k in meta["greedy_json"]}
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def bench(suite: str = typer.Option("quick", help="Suite name (medvlp.bench.list_suites())."),
          out: Path = typer.Option(Path("benchmarks/results"), help="Where results JSON and table go."),
          only: Optional[str] = typer.Option(None, help="Comma-separated parts: quality, speed."),
          data_root: Optional[str] = DataRoot) -> None:
    """Run a benchmark suite: downstream quality per method and engine speed; writes JSON + markdown."""
    from medvlp.bench import run_suite

    paths = run_suite(suite, out, data_root=_set_data_root(data_root),
                      parts=None if only is None else [p.strip() for p in only.split(",")])
    for p in paths:
        typer.echo(str(p))


@app.command()
def structure(input_path: Path = typer.Argument(..., help="CSV or JSONL of reports."),
              out: Path = typer.Option(..., help="UMS JSONL to write (appended; a re-run resumes)."),
              teacher: str = typer.Option("rules", help="rules | openai:URL[#MODEL] | hf:NAME_OR_PATH | fake"),
              second_teacher: Optional[str] = typer.Option(None, help="A second teacher: per-finding kappa."),
              text_columns: str = typer.Option("findings,impression", help="Comma-separated text columns."),
              id_column: str = typer.Option("uid"),
              limit: Optional[int] = typer.Option(None),
              overwrite: bool = typer.Option(False, help="Start the output afresh (cache kept)."),
              allow_remote: bool = typer.Option(False, "--allow-remote",
                                                help="Allow sending report text to a non-local endpoint.")) -> None:
    """Turn free-text reports into verified UMS JSON (rules labeler or an LLM teacher)."""
    from medvlp.knowledge.structure import run_structure

    run_structure(input_path, out, teacher=teacher, second_teacher=second_teacher,
                  text_columns=tuple(c.strip() for c in text_columns.split(",") if c.strip()),
                  id_column=id_column, allow_remote=allow_remote, limit=limit, overwrite=overwrite)
    typer.echo(f"UMS records: {out}  (metadata: {out}.meta.json)")


@app.command()
def symptoms(task: str = typer.Argument(..., help="A curated symptom set name, e.g. pneumoniamnist."),
             out: Path = typer.Option(..., help="JSON file to write.")) -> None:
    """Write a task's visual-symptom set (ViP's VSG) as JSON."""
    from medvlp.knowledge.symptoms import list_symptom_sets, run_symptoms

    if task not in list_symptom_sets():
        raise typer.BadParameter(f"{task!r}; curated sets: {', '.join(list_symptom_sets())}")
    result = run_symptoms(out, task)
    for cls, items in result["classes"].items():
        typer.echo(f"{cls}: " + "; ".join(items))
    typer.echo(f"written: {out}")


@app.command()
def models(pattern: Optional[str] = typer.Argument(None, help="fnmatch pattern, e.g. 'vit_*'.")) -> None:
    """List registered backbones."""
    from medvlp.models import list_models

    for name in list_models(pattern):
        typer.echo(name)


@app.command()
def datasets(data_root: Optional[str] = DataRoot) -> None:
    """List known data sets and whether they can be loaded here."""
    from medvlp.data import data_root as find_root
    from medvlp.data import list_datasets

    _set_data_root(data_root)
    typer.echo(f"data root: {find_root(data_root) or '(none; bundled sets only)'}")
    for name in list_datasets():
        typer.echo(name)


def main() -> None:
    logging.basicConfig(level=os.environ.get("MEDVLP_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except MedvlpError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
