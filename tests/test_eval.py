"""asymbp-eval and attack=... at the end of training, on real digits runs: results in the run
directory, keyed and skipped, the three attackers, bad input refused with nothing written, and the
aggregator's robustness.csv, table and figure."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from asymbp import runs
from asymbp.config import CONFIG_DIR
from asymbp.evaluate import main as eval_main
from asymbp.report.cli import main as aggregate_main
from asymbp.robustness import RESULTS_DIR
from asymbp.train import run
from tests.conftest import compose_config, run_cli

pytest.importorskip("torchattacks", reason="pip install 'asymbp[robustness]'")

BASE = ("dataset=digits", "model=mlp", "norm=none", "epochs=2", "threads=1", "progress=false",
        "alignment=false", "exp_name=robust")  # fmt: skip
FGSM = ("attack=fgsm", "attack.epsilons=[0,0.1]")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict[str, Path]:
    """A finished bp run and a finished usf run of the same condition and seed, side by side."""
    root = tmp_path_factory.mktemp("runs")
    dirs = {}
    for rule in ("bp", "usf"):
        cfg = compose_config(*BASE, f"output_root={root}", f"feedback={rule}")
        run(cfg)
        dirs[rule] = runs.run_directory(cfg)
    return dirs


def copy_runs(sweep, tmp_path, *rules) -> dict[str, Path]:
    folder = tmp_path / "copy"
    folder.mkdir()
    out = {}
    for rule in rules:
        out[rule] = folder / sweep[rule].name
        shutil.copytree(sweep[rule], out[rule], ignore=shutil.ignore_patterns(RESULTS_DIR))
    return out


def rows(run_dir: Path) -> list[dict]:
    found = []
    for path in sorted((run_dir / RESULTS_DIR).glob("*.json")):
        record = json.loads(path.read_text())
        found += [{**r, "file": path.name} for r in record["results"]]
    return found


def without_time(found):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in found]


def test_eval_writes_every_attacker_and_epsilon_and_eps_0_is_the_runs_test_accuracy(
    sweep, tmp_path
):
    dirs = copy_runs(sweep, tmp_path, "bp", "usf")
    assert eval_main([str(tmp_path / "copy"), *FGSM]) == 0
    for run_dir in dirs.values():
        found = rows(run_dir)
        assert {(r["attacker"], r["epsilon"]) for r in found} == {
            (a, e) for a in ("exact", "rule", "transfer") for e in (0.0, 0.1)
        }
        test_acc = json.loads((run_dir / runs.METRICS).read_text())["test_acc"]
        for r in found:
            if r["epsilon"] == 0:
                assert r["accuracy"] == test_acc  # the whole test split, the run's own numbers
            else:
                assert r["accuracy"] < test_acc
    usf = {(r["attacker"], r["epsilon"]): r for r in rows(dirs["usf"])}
    assert usf[("transfer", 0.1)]["source"] == dirs["bp"].name
    bp = {(r["attacker"], r["epsilon"]): r for r in rows(dirs["bp"])}
    assert bp[("transfer", 0.1)]["accuracy"] == bp[("exact", 0.1)]["accuracy"]  # bp attacks itself
    assert bp[("rule", 0.1)]["accuracy"] == bp[("exact", 0.1)]["accuracy"]  # bp's rule is exact


def test_a_run_evaluated_twice_gives_the_same_numbers_and_nothing_is_recomputed(
    sweep, tmp_path, capsys
):
    pgd = ("attack=pgd", "attack.epsilons=[0.05]", "attack.steps=3", "attack.subset=100")
    first = copy_runs(sweep, tmp_path, "bp", "usf")
    assert eval_main([str(tmp_path / "copy"), *pgd]) == 0
    files = {p: p.read_bytes() for p in (first["usf"] / RESULTS_DIR).glob("*.json")}
    capsys.readouterr()
    assert eval_main([str(tmp_path / "copy"), *pgd]) == 0
    assert "accuracy=" not in capsys.readouterr().out  # skipped: already computed
    assert {p: p.read_bytes() for p in files} == files
    again = tmp_path / "again"
    shutil.copytree(tmp_path / "copy", again, ignore=shutil.ignore_patterns(RESULTS_DIR))
    assert eval_main([str(again), *pgd]) == 0
    assert without_time(rows(again / first["usf"].name)) == without_time(rows(first["usf"]))
    # a new epsilon adds rows to the same file; another setting writes another file
    assert eval_main([str(again), *pgd[:1], "attack.epsilons=[0.05,0.1]", *pgd[2:]]) == 0
    assert len(rows(again / first["usf"].name)) == 6
    assert eval_main([str(again), *pgd[:2], "attack.steps=4", pgd[3]]) == 0
    assert len(list((again / first["usf"].name / RESULTS_DIR).glob("pgd-*.json"))) == 2
    (name,) = {r["file"] for r in rows(first["usf"])}
    kept = [
        r for r in rows(again / first["usf"].name) if r["file"] == name and r["epsilon"] == 0.05
    ]
    assert without_time(kept) == without_time(rows(first["usf"]))  # other rows changed nothing


def _assert_refused(argv, message, capsys, *run_dirs):
    capsys.readouterr()
    assert eval_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert len(err.splitlines()) == 1 and err.startswith("asymbp-eval: error:")
    for run_dir in run_dirs:
        assert not (run_dir / RESULTS_DIR).exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (("attack=cw",), "attack"),
        (("attack=fgsm", "attack.epsilons=[-0.1]"), "attack.epsilons"),
        (("attack=pgd", "attack.steps=0"), "attack.steps"),
        (("attack=fgsm", "attack.attackers=[exact,gradient]"), "attack.attackers"),
        (("attack=fgsm", "attack.typo=1"), "typo"),
        (("attack=fgsm", "epochs=3"), "asymbp-eval takes attack="),
        ((), "choose an attack"),
    ],
)
def test_bad_attack_input_is_one_line_and_writes_nothing(sweep, tmp_path, capsys, args, message):
    dirs = copy_runs(sweep, tmp_path, "bp", "usf")
    _assert_refused([str(tmp_path / "copy"), *args], message, capsys, *dirs.values())


def test_an_unfinished_run_is_refused_before_any_run_is_attacked(sweep, tmp_path, capsys):
    dirs = copy_runs(sweep, tmp_path, "bp", "usf")
    (dirs["usf"] / runs.DONE).unlink()
    _assert_refused([str(tmp_path / "copy"), *FGSM], "not a finished run", capsys, *dirs.values())


def test_a_missing_transfer_source_is_named_and_nothing_is_written(sweep, tmp_path, capsys):
    dirs = copy_runs(sweep, tmp_path, "usf")
    message = f"needs the run {{'feedback': 'bp'}} of {dirs['usf']}"
    _assert_refused([str(dirs["usf"]), *FGSM], message, capsys, dirs["usf"])
    # without the transfer attacker it runs
    assert eval_main([str(dirs["usf"]), *FGSM, "attack.attackers=[exact,rule]"]) == 0
    assert {r["attacker"] for r in rows(dirs["usf"])} == {"exact", "rule"}


def test_without_torchattacks_the_error_says_how_to_install_it(
    sweep, tmp_path, capsys, monkeypatch
):
    dirs = copy_runs(sweep, tmp_path, "bp", "usf")
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    _assert_refused(
        [str(tmp_path / "copy"), *FGSM], "pip install 'asymbp[robustness]'", capsys,
        *dirs.values(),
    )  # fmt: skip


def test_attack_at_the_end_of_training_keeps_the_run_directory_and_trains_the_bp_source(tmp_path):
    overrides = (*BASE, f"output_root={tmp_path}", "feedback=frsf", "seed=1")
    cfg = compose_config(*overrides, *FGSM)
    assert runs.run_directory(cfg) == runs.run_directory(compose_config(*overrides))
    run(cfg)
    found = rows(runs.run_directory(cfg))
    assert {r["attacker"] for r in found} == {"exact", "rule", "transfer"}
    bp = compose_config(*BASE, f"output_root={tmp_path}", "seed=1", "feedback=bp")
    source = runs.run_directory(bp)
    assert runs.is_done(source)  # the bp run of the same condition, trained for the transfer
    assert {r["source"] for r in found if r["attacker"] == "transfer"} == {source.name}
    # run again (finished): nothing is trained or attacked again, the results stay
    before = {p: p.read_bytes() for p in (runs.run_directory(cfg) / RESULTS_DIR).iterdir()}
    run(cfg)
    assert {p: p.read_bytes() for p in before} == before


def test_the_aggregator_writes_robustness_csv_table_and_figure(sweep, tmp_path):
    copy_runs(sweep, tmp_path, "bp", "usf")
    assert eval_main([str(tmp_path / "copy"), *FGSM]) == 0
    out = tmp_path / "report"
    assert aggregate_main([str(tmp_path / "copy"), "--out", str(out)]) == 0
    table = pd.read_csv(out / "robustness.csv")
    assert list(table.columns[:7]) == [
        "dataset", "stabilization", "condition", "attack", "settings", "attacker", "epsilon"
    ]  # fmt: skip
    assert len(table) == 2 * 3 * 2  # conditions x attackers x epsilons
    usf = next(p for p in (tmp_path / "copy").iterdir() if "_usf_" in p.name)
    expected = {(r["attacker"], r["epsilon"]): r["accuracy"] for r in rows(usf)}
    got = table[table["condition"] == "usf"].set_index(["attacker", "epsilon"])["accuracy_mean"]
    assert {k: pytest.approx(v) for k, v in expected.items()} == got.to_dict()
    assert (table["n_runs"] == 1).all() and (table["n_images"] == 359).all()  # digits test split
    bp_dir = next(p for p in (tmp_path / "copy").iterdir() if "_bp_" in p.name)
    bp_exact = {(r["attacker"], r["epsilon"]): r["accuracy"] for r in rows(bp_dir)}[("exact", 0.1)]
    gains = pd.read_csv(out / "robustness_gains.csv")
    assert gains["condition"].tolist() == ["usf"] and gains["epsilon"].tolist() == [0.1]
    row = gains.iloc[0]
    assert row["gain_exact"] == pytest.approx(100 * (expected[("exact", 0.1)] - bp_exact))
    assert row["gain_rule"] == pytest.approx(100 * (expected[("rule", 0.1)] - bp_exact))
    assert row["masked"] == pytest.approx(row["gain_rule"] - row["gain_exact"])
    text = (out / "table_robustness.md").read_text()
    assert "FGSM on digits" in text and "eps 0.1" in text and "Gains over bp" in text
    assert (out / "fig_robustness.png").stat().st_size > 0


def test_every_attack_config_composes_with_exactly_the_keys_its_code_checks():
    from asymbp.robustness import ATTACKS, COMMON, check

    for name, spec in ATTACKS.items():
        attack = compose_config(f"attack={name}").attack
        assert set(attack) == {"name", *COMMON, *spec.options}, name
        check(attack)
        text = (CONFIG_DIR / "attack" / f"{name}.yaml").read_text().splitlines()
        keys = [line for line in text if line and not line.startswith(("#", " ", "defaults:"))]
        assert all("#" in line for line in keys if not line.startswith("name:")), name
    assert compose_config().attack.name == "none"


@pytest.mark.slow
def test_a_sweep_with_an_attack_attacks_every_run_once(tmp_path):
    """usf first: its transfer source (bp) is trained, and attacked, inside its job; bp's own job
    then finds both done."""
    result = run_cli(
        "-m", *BASE, f"output_root={tmp_path}", "feedback=usf,bp", *FGSM,
        "attack.attackers=[exact,transfer]",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    found = sorted((tmp_path / "robust").glob("*/robustness/*.json"))
    assert len(found) == 2
    for path in found:
        record = json.loads(path.read_text())
        assert len(record["results"]) == 4  # 2 attackers x 2 epsilons, none twice
    assert result.stdout.count("fgsm exact eps=0.1") == 2
