"""``benchmarks/bench.py``: the experiment registry, a tiny end-to-end table, partial results,
plots."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from icbpl import ICBPL, evaluate
from icbpl.core.neighbours import mine_neighbours
from icbpl.peers import fit_peer
from icbpl_bench import add_arguments, list_experiments
from icbpl_bench._context import BenchContext
from icbpl_bench._data import BenchData
from icbpl_bench._docs import mean_std, write_section
from icbpl_bench._registry import get_experiment, register_experiment, run_experiment
from icbpl_bench._settings import QUICK, EncoderSpec, Plan

ROOT = Path(__file__).resolve().parents[1]
ICBPL_KW = {"epochs": 3, "batch_size": 32}
PEERS = {
    "kmeans": {"n_init": 2},
    "scan": {"epochs": 1, "self_label_epochs": 1},
    "temi": {"epochs": 1, "n_heads": 2},
    "turtle": {"iterations": 5},
}


def _blobs() -> BenchData:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 6)) * 4
    y = np.repeat(np.arange(3), 30)
    x = (centres[y] + rng.normal(size=(90, 6))).astype(np.float32)
    views = (x[None] + 0.3 * rng.normal(size=(2, 90, 6))).astype(np.float32)
    return BenchData("tiny", "three blobs", x, y.astype(np.int64), 3, views, ("synthetic",))


SETTINGS = dataclasses.replace(
    QUICK,
    mode="quick",
    table11=(Plan("tiny", ICBPL_KW, PEERS),),
    table11_seeds=(0, 1),
    ablation=Plan("tiny", ICBPL_KW),
    ablation_seeds=(0,),
    neighbour_ks=(0, 2, 4),
    refresh=Plan("tiny", {"epochs": 5, "batch_size": 32}),
    refresh_every=(0, 2),
    encoders=(EncoderSpec("none", "efficientnet_lite0", "random", "none"),),
    plots=Plan("tiny", {"epochs": 4, "batch_size": 32}),
    tsne_points=60,
    n_mined=5,
)


def _context(tmp_path: Path) -> BenchContext:
    return BenchContext(
        settings=SETTINGS,
        out_dir=tmp_path / "out",
        docs_file=tmp_path / "BENCH.md",
        command="icbpl bench test",
        datasets={"tiny": lambda ctx: _blobs()},
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_registry_names_and_errors() -> None:
    names = list_experiments()
    expected = ["table11", "neighbours", "distance", "losses", "encoders", "refresh", "plots"]
    assert set(expected) <= set(names) and "all" in names
    assert set(get_experiment("all").parts) == set(expected)
    with pytest.raises(ValueError, match=r"known experiments: .*table11"):
        get_experiment("table12")
    with pytest.raises(ValueError, match="already registered"):
        register_experiment("table11", "again")(lambda ctx: [])


def test_add_arguments_parses_the_documented_options() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["losses", "--quick", "--seeds", "3", "4", "--out", "x"])
    assert (args.experiment, args.quick, args.seeds, args.out) == (
        "losses",
        True,
        [3, 4],
        Path("x"),
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["table11", "--seeds", "-1"])


def test_table11_end_to_end_files_hold_what_was_computed(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    (log,) = run_experiment("table11", ctx)[0]
    assert log.complete
    rows = _rows(tmp_path / "out" / "table11-quick.csv")
    methods = {r["method"] for r in rows}
    assert {"k-means", "SCAN", "TEMI", "TURTLE", "ICBPL (paper: one head)"} <= methods
    assert len(rows) == 2 * 6  # two seeds, six rows each
    # the CSV is the run's numbers, exactly
    for r, run in zip(rows, log.runs, strict=True):
        assert (r["method"], int(r["seed"])) == (run.method, run.seed)
        assert float(r["acc"]) == run.values["acc"]
    # ... and they are what the methods compute on these inputs, recomputed independently
    data = _blobs()
    nb = mine_neighbours(data.features - data.features.mean(0), 5)
    for seed in (0, 1):
        km = fit_peer("kmeans", data.features, 3, neighbours=nb, views=data.views, seed=seed,
                      n_init=2)  # fmt: skip
        row = next(r for r in rows if r["method"] == "k-means" and int(r["seed"]) == seed)
        assert float(row["acc"]) == pytest.approx(evaluate(data.labels, km.labels)["acc"])
        one = ICBPL(3, random_state=seed, **ICBPL_KW)
        one.fit(data.features, views=data.views, neighbours=nb[:, :4])
        row = next(
            r for r in rows if r["method"].startswith("ICBPL (paper") and int(r["seed"]) == seed
        )
        assert float(row["nmi"]) == pytest.approx(evaluate(data.labels, one.labels_)["nmi"])
    md = (tmp_path / "out" / "table11-quick.md").read_text()
    accs = [float(r["acc"]) for r in rows if r["method"] == "TURTLE"]
    assert f"| TURTLE | {mean_std(accs)} |" in md
    assert "status: complete" in md and "seeds: [0, 1]" in md and "commit" in md
    section = (tmp_path / "BENCH.md").read_text()
    assert "<!-- BEGIN bench-table11-quick -->" in section and mean_std(accs) in section


def test_interrupted_run_keeps_finished_seeds_marked_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import icbpl_bench._table11 as t11

    real = t11.run_peer

    def stop_at_seed_1(ctx, data, name, options, seed):  # type: ignore[no-untyped-def]
        if seed == 1:
            raise KeyboardInterrupt
        return real(ctx, data, name, options, seed)

    monkeypatch.setattr(t11, "run_peer", stop_at_seed_1)
    ctx = _context(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("table11", ctx)
    rows = _rows(tmp_path / "out" / "table11-quick.csv")
    assert {int(r["seed"]) for r in rows if r["method"] == "k-means"} == {0}
    md = (tmp_path / "out" / "table11-quick.md").read_text()
    assert "**partial** (stopped by KeyboardInterrupt)" in md
    assert "seeds done [0] of [0, 1]" in md
    # the table averages finished seeds only: ICBPL's seed-1 run is in the CSV, not the table
    assert "| ICBPL (paper: one head) |" in md and " | 1 |" in md and " | 2 |" not in md
    assert "**partial**" in (tmp_path / "BENCH.md").read_text()


def test_plots_are_valid_pngs_and_run_the_k_sweep_first(tmp_path: Path) -> None:
    from PIL import Image

    ctx = _context(tmp_path)
    logs, failed = run_experiment("plots", ctx)
    assert not failed and [log.name for log in logs] == ["neighbours", "plots"]
    out = tmp_path / "out"
    pngs = sorted(out.glob("plots-quick-*.png"))
    assert [p.name for p in pngs] == [
        "plots-quick-accuracy.png",
        "plots-quick-k-sweep.png",
        "plots-quick-latent-tsne.png",
    ]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as im:
            im.verify()
    md = (out / "plots-quick.md").read_text()
    assert "![" in md and "(plots-quick-k-sweep.png)" in md
    assert "(out/plots-quick-accuracy.png)" in (tmp_path / "BENCH.md").read_text()
    ks = {int(float(r["k"])) for r in _rows(out / "neighbours-quick.csv")}
    assert ks == {0, 2, 4}
    history = _rows(out / "plots-quick-history.csv")
    assert [int(r["epoch"]) for r in history] == [1, 2, 3, 4]


def test_write_section_replaces_only_its_own_section(tmp_path: Path) -> None:
    doc = tmp_path / "B.md"
    doc.write_text("# B\n\n<!-- BEGIN a -->\nold a\n<!-- END a -->\nkeep me\n")
    write_section(doc, "a", "new a")
    write_section(doc, "b", "new b")
    text = doc.read_text()
    assert "new a" in text and "old a" not in text and "keep me" in text
    assert text.index("new a") < text.index("<!-- BEGIN b -->")


def test_missing_dataset_is_skipped_with_a_clear_message(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    ctx.data_root = tmp_path / "no-data"
    ctx.settings = dataclasses.replace(
        SETTINGS, table11=(Plan("mnist", ICBPL_KW, {}), Plan("tiny", ICBPL_KW, {"kmeans": {}}))
    )
    (log,) = run_experiment("table11", ctx)[0]
    assert log.complete
    md = (tmp_path / "out" / "table11-quick.md").read_text()
    assert f"Skipped: MNIST not found at {tmp_path / 'no-data' / 'mnist.npz'}" in md
    assert "| k-means |" in md


def test_git_rev_marks_dirty_trees_except_the_benchmarks_own_outputs(tmp_path: Path) -> None:
    import subprocess

    from icbpl_bench._docs import git_rev

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "docs").mkdir()
    for name in ("code.py", "docs/B.md"):
        (tmp_path / name).write_text("v1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    clean = git_rev(tmp_path)
    assert clean != "unknown" and not clean.endswith("+dirty")
    (tmp_path / "docs" / "B.md").write_text("v2\n")
    assert git_rev(tmp_path) == clean + "+dirty"
    assert git_rev(tmp_path, ignore=[tmp_path / "docs"]) == clean
    (tmp_path / "code.py").write_text("v2\n")
    assert git_rev(tmp_path, ignore=[tmp_path / "docs"]) == clean + "+dirty"


def test_bench_main_rejects_unknown_experiments(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`benchmarks/bench.py` rejects an unknown experiment clearly and writes nothing."""
    import argparse

    from icbpl_bench import run_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)  # main() would also quieten icbpl's loggers for the later tests
    code = run_args(parser.parse_args(["no-such-table", "--no-docs", "--out", str(tmp_path)]))
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'no-such-table'" in err and "table11" in err
    assert not any(tmp_path.iterdir())


def test_only_cuts_table11_to_the_named_datasets_with_its_own_files(tmp_path: Path) -> None:
    from icbpl_bench._main import only_datasets

    two = dataclasses.replace(
        SETTINGS, table11=(Plan("mnist", ICBPL_KW, {}), Plan("tiny", ICBPL_KW, {"kmeans": {}}))
    )
    cut, variant = only_datasets(two, "table11", ["tiny"])
    assert [p.dataset for p in cut.table11] == ["tiny"] and variant == "tiny"
    with pytest.raises(ValueError, match="known: mnist, tiny"):
        only_datasets(two, "table11", ["cifar100"])
    with pytest.raises(ValueError, match="applies to table11"):
        only_datasets(two, "losses", ["tiny"])
    ctx = _context(tmp_path)
    ctx.settings, ctx.variant = cut, variant
    (log,) = run_experiment("table11", ctx)[0]
    assert log.stem == "table11-tiny-quick" and log.complete
    assert (tmp_path / "out" / "table11-tiny-quick.csv").is_file()
    assert not (tmp_path / "out" / "table11-quick.csv").exists()
    section = (tmp_path / "BENCH.md").read_text()
    assert "<!-- BEGIN bench-table11-tiny-quick -->" in section
    assert "tiny only (`--only`)" in section


def test_plan_ours_is_a_separate_fit_for_the_additions_row(tmp_path: Path) -> None:
    ours = {"epochs": 2, "init": "kmeans", "loss_weights": (80.0, 2.0, 2.0, 1.0)}
    ctx = _context(tmp_path)
    ctx.settings = dataclasses.replace(
        SETTINGS, table11=(Plan("tiny", ICBPL_KW, {}, ours=ours),), table11_seeds=(0,)
    )
    (log,) = run_experiment("table11", ctx)[0]
    row = next(r for r in log.runs if r.method.startswith("ICBPL + ours"))
    data = _blobs()
    nb = mine_neighbours(data.features - data.features.mean(0), 5)
    model = ICBPL(3, random_state=0, n_heads=SETTINGS.n_heads, **{**ICBPL_KW, **ours})
    model.fit(data.features, views=data.views, neighbours=nb[:, :4])
    assert row.values["ari"] == pytest.approx(evaluate(data.labels, model.labels_)["ari"])
    assert row.values["epoch"] <= 2  # the separate fit's 2 epochs, not the paper row's 3
    md = (tmp_path / "out" / "table11-quick.md").read_text()
    assert "ICBPL + ours: a separate fit with" in md and "init kmeans" in md


def test_plan_ours_with_the_scan_start_gets_every_mined_neighbour_and_its_own_heads(
    tmp_path: Path,
) -> None:
    ours = {"init": "scan", "init_epochs": 1, "n_heads": 1}
    ctx = _context(tmp_path)
    ctx.settings = dataclasses.replace(
        SETTINGS, table11=(Plan("tiny", ICBPL_KW, {}, ours=ours),), table11_seeds=(0,)
    )
    (log,) = run_experiment("table11", ctx)[0]
    row = next(r for r in log.runs if r.method == "ICBPL + ours")
    data = _blobs()
    nb = mine_neighbours(data.features - data.features.mean(0), 5)
    # all 5 mined columns feed SCAN's start (the kNN loss takes the first 4); one head
    model = ICBPL(3, random_state=0, **ICBPL_KW, init="scan", init_epochs=1, n_heads=1)
    model.fit(data.features, views=data.views, neighbours=nb)
    assert len(model.heads_) == 1
    assert row.values["ari"] == pytest.approx(evaluate(data.labels, model.labels_)["ari"])
    assert row.values["score"] == pytest.approx(model.heads_[0]["score"])
    md = (tmp_path / "out" / "table11-quick.md").read_text()
    assert "init scan, init_epochs 2" not in md and "init scan, init_epochs 1, one head" in md


def test_every_benchmark_is_listed_and_every_docs_command_names_a_script_that_is_there() -> None:
    """benchmarks/README.md lists each script and experiment; a command in docs/BENCHMARKS.md
    that runs a missing script says on its line that it was removed (git has it)."""
    listing = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))
    unlisted = [s for s in scripts if not re.search(rf"\b{re.escape(s)}\b", listing)]
    unlisted += [e for e in list_experiments() if f"| `{e}` |" not in listing]
    assert not unlisted, f"benchmarks/README.md does not list {unlisted}"
    stale = []
    for line in (ROOT / "docs" / "BENCHMARKS.md").read_text(encoding="utf-8").splitlines():
        for name in re.findall(r"python3? benchmarks/(\w+\.py)", line):
            if name not in scripts and "removed in issue 16" not in line:
                stale.append(f"{name}: {line.strip()[:80]}")
    assert not stale, "docs/BENCHMARKS.md names missing scripts:\n" + "\n".join(stale)
