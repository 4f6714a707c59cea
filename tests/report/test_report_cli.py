"""``t2po report`` end to end over synthetic run folders: outputs, PNGs, grouping, MLflow, bad inputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_runs import BASE_SPECS, Spec, make_run

from t2po_cli.cli.app import main
from t2po_cli.tracking import keys as K
from t2po_cli.tracking.jsonl import MetricsWriter

PNGS = ("learning_curves.png", "stability.png", "t2po.png", "efficiency.png", "diagnostics.png", "thresholds.png")


def _report(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["report", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_end_to_end_report(experiment_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _report([str(experiment_dir), "--json"], capsys)
    assert rc == 0, err
    summary = json.loads(out)
    folder = experiment_dir / "report"
    assert summary["out"] == str(folder)
    for name in ("report.html", "report.md", "summary.json", *PNGS):
        assert (folder / name).is_file(), name
    assert "next:" in err and "report.html" in err

    assert summary["runs_total"] == 6 and summary["runs_collapsed"] == 2
    runs = {r["name"]: r for r in summary["runs"]}
    window = summary["thresholds"]["recover_window"]
    for spec in BASE_SPECS:
        run = runs[spec.name]
        assert run["collapsed"] == (spec.collapse_at is not None), spec.name
        if spec.collapse_at is not None:
            assert abs(run["collapse_step"] - spec.collapse_at) <= window
            assert {d["name"] for d in run["detections"]} >= {"success_collapse", "entropy_collapse"}
    variants = {v["variant"]: v for v in summary["variants"]}
    assert set(variants) == {"t2po=off", "t2po=on"}  # env, algo, model, tau and eta are shared
    assert variants["t2po=off"]["collapse_rate"] == pytest.approx(2 / 3)
    assert variants["t2po=on"]["collapse_rate"] == 0
    assert variants["t2po=on"]["final_success"]["mean"] > 0.6
    assert variants["t2po=on"]["final_success"]["n"] == 3
    assert summary["skipped_plots"] == {"sensitivity": summary["skipped_plots"]["sensitivity"]}

    md = (folder / "report.md").read_text()
    for section in ("## Overview", "## Variants", "## Collapse detection", "## Early warnings",
                    "## Stability versus capability", "## T2PO activity", "## Threshold sensitivity and transfer",
                    "## Threshold trajectories", "## Efficiency", "## Notes"):
        assert section in md
    assert "plot sensitivity skipped" in md

    html = (folder / "report.html").read_text()
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(srcs) == len(PNGS)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"(src|href)=\"(https?:|//|/)", html) and "<link" not in html and "<script" not in html


def test_pngs_are_real_images(experiment_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from matplotlib.image import imread

    rc, _, err = _report([str(experiment_dir)], capsys)
    assert rc == 0, err
    assert "t2po report: 6 runs, 2 collapsed" in err
    for name in PNGS:
        path = experiment_dir / "report" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = imread(path)
        assert img.shape[0] >= 300 and img.shape[1] >= 400, name
        assert float(np.var(img[..., :3])) > 1e-3, f"{name} is blank"


def test_existing_report_is_never_overwritten(experiment_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _report([str(experiment_dir)], capsys)[0] == 0
    first = (experiment_dir / "report" / "summary.json").read_text()
    assert _report([str(experiment_dir)], capsys)[0] == 0
    assert (experiment_dir / "report-1" / "report.html").is_file()
    assert (experiment_dir / "report" / "summary.json").read_text() == first
    # A report folder inside the experiment is not mistaken for a run on the next report.
    rc, out, _ = _report([str(experiment_dir), "--json", "--out", str(experiment_dir / "report")], capsys)
    assert rc == 0 and json.loads(out)["out"] == str(experiment_dir / "report-2")


def test_by_keys_and_unknown_key(experiment_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = next(experiment_dir.glob("sweep-*"))
    rc, out, _ = _report([str(sweep), str(experiment_dir / "webshop_off_s0"), "--by", "env.name",
                          "--json", "--out", str(tmp_path / "r")], capsys)
    assert rc == 0
    summary = json.loads(out)
    assert [v["variant"] for v in summary["variants"]] == ["all runs"] and summary["runs_total"] == 4
    rc, _, err = _report([str(experiment_dir), "--by", "t2po.varient"], capsys)
    assert rc == 2 and "t2po.variant" in err and len(err.strip().splitlines()) == 1


def test_missing_metrics_skip_plots_gracefully(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "exp", Spec("bare", ("env=webshop",), 0), steps=10)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").unlink()
    writer = MetricsWriter(run / "metrics.jsonl")
    for r in rows:  # keep only success: no stability, T2PO or token metrics
        writer.write(r["step"], r["split"], {K.SUCCESS_RATE: r["metrics"][K.SUCCESS_RATE]})
    rc, out, err = _report([str(run), "--json"], capsys)
    assert rc == 0, err
    summary = json.loads(out)
    assert set(summary["skipped_plots"]) == {"stability", "t2po", "sensitivity", "efficiency", "diagnostics",
                                             "thresholds"}
    assert summary["plots"]["learning_curves"] == "learning_curves.png"
    assert "actor/grad_norm" in summary["skipped_plots"]["stability"]


def test_torn_last_line_is_tolerated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "exp", BASE_SPECS[0], steps=12)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 12, "split": "tra')
    rc, out, err = _report([str(tmp_path / "exp"), "--json"], capsys)
    assert rc == 0, err
    assert json.loads(out)["runs"][0]["last_step"] == 11


def test_config_from_an_older_schema_is_read_raw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "exp", BASE_SPECS[0], steps=8)
    cfg = run / "resolved_config.yaml"
    cfg.write_text(cfg.read_text() + "retired_key: 1\n")  # a key a later schema no longer has
    rc, out, err = _report([str(run), "--json"], capsys)
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["runs"][0]["seed"] == 0
    assert any("without the schema check" in n for n in summary["notes"])


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt", "no_config", "bad_config", "no_metrics", "both"])
def test_bad_inputs_are_one_line_errors(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    args = [str(exp)]
    expect = {"missing": "does not exist", "empty": "no run folders", "corrupt": "line 3",
              "no_config": "no resolved_config.yaml", "bad_config": "resolved_config.yaml",
              "no_metrics": "logged metrics", "both": "not both"}[case]
    if case == "missing":
        args = [str(tmp_path / "nope")]
    elif case == "corrupt":
        run = make_run(exp, BASE_SPECS[0], steps=5)
        lines = (run / "metrics.jsonl").read_text().splitlines()
        lines[2] = "{garbage"
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    elif case == "no_config":
        run = make_run(exp, BASE_SPECS[0], steps=5)
        (run / "resolved_config.yaml").unlink()
    elif case == "bad_config":
        run = make_run(exp, BASE_SPECS[0], steps=5)
        (run / "resolved_config.yaml").write_text("model: [unclosed\n")
    elif case == "no_metrics":
        run = make_run(exp, BASE_SPECS[0], steps=5)
        (run / "metrics.jsonl").unlink()
    elif case == "both":
        args = [str(exp), "--experiment", "x"]
    rc, out, err = _report(args, capsys)
    assert rc == 2, err
    assert out == ""
    assert err.startswith("error:") and expect in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_help_has_example_and_import_is_light() -> None:
    code = (
        "import sys\n"
        "from t2po_cli.cli.app import main\n"
        "rc = main(['report', '--help'])\n"
        "mods = ('pandas', 'matplotlib', 't2po_cli.report.build', 't2po_cli.report.plots')\n"
        "heavy = [m for m in mods if m in sys.modules]\n"
        "print('HEAVY', heavy, rc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    text = r.stdout + r.stderr
    assert "Example: t2po report" in text
    assert "HEAVY [] 0" in text, text


def test_report_from_mlflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs delivered by the real MLflow sink (sqlite store) report like the folders they came from."""
    from synthetic_runs import synthetic_rows

    from t2po_cli.config.compose import compose_config
    from t2po_cli.tracking.mlflow_sink import MlflowSink

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for spec in (BASE_SPECS[0], BASE_SPECS[3]):
        cfg = compose_config([*spec.overrides, f"trainer.seed={spec.seed}", f"tracking.tracking_uri={uri}",
                              "experiment_name=report-test", f"runs_root={tmp_path / 'runs'}"]).config
        run_dir = tmp_path / spec.name
        run_dir.mkdir()
        rows = [{"step": s, "split": sp, "wall_time": 1.0e9 + s, "metrics": m} for s, sp, m in synthetic_rows(spec)]
        sink = MlflowSink(run_dir, cfg)
        assert sink.deliver(rows) and sink.finish()
    rc, out, err = _report(["--experiment", "report-test", "--tracking-uri", uri, "--json",
                            "--out", str(tmp_path / "rep")], capsys)
    assert rc == 0, err
    summary = json.loads(out)
    runs = {r["name"]: r for r in summary["runs"]}
    assert set(runs) == {"webshop_on_s0", "webshop_off_s0"}
    assert runs["webshop_off_s0"]["collapsed"] and not runs["webshop_on_s0"]["collapsed"]
    assert runs["webshop_on_s0"]["curve"] == "val"  # val/ metrics came back as validation rows
    assert {v["variant"] for v in summary["variants"]} == {"t2po=off", "t2po=on"}
    rc, _, err = _report(["--experiment", "nope", "--tracking-uri", uri], capsys)
    assert rc == 2 and "no experiment 'nope'" in err
