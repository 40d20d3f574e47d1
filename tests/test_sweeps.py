"""Experiment presets, the arms sweeper and the parallel launchers."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import CONFIG_DIR, REPO, compose_config, orphans_after_killing, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.plugins import Plugins
from omegaconf import OmegaConf
from test_safety import ctrl_c_after_the_first_checkpoint, lock_held_elsewhere

from asymbp import jobs, runs
from asymbp.build import make_scheduler, validate
from asymbp.config import ConfigError
from asymbp.report.cli import main as aggregate
from asymbp.train import run

SMALL = ["dataset=synthetic", "dataset.train_size=128", "dataset.test_size=64", "epochs=1"]


def expand(preset: str | None, *command_line: str) -> list[list[str]]:
    """The jobs a `-m` sweep would launch, without launching them."""
    overrides = [f"experiment={preset}"] if preset else []
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    sweeper_cfg = OmegaConf.to_container(cfg.hydra.sweeper, resolve=False)
    # The class as Hydra's plugin scan loaded it (the scan re-executes plugin modules).
    arms_sweeper = Plugins.instance().class_name_to_class[sweeper_cfg["_target_"]]
    sweeper = arms_sweeper(params=sweeper_cfg.get("params"), arms=sweeper_cfg.get("arms"))
    sweeper.hydra_context = SimpleNamespace(config_loader=None)
    sweeper._command_line = list(command_line)
    return [job for batch in sweeper.split_arguments(None, None) for job in batch]


def settings(job: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in job)


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset, jobs",
    [
        ("paper_table", 5 * 4 * 3),
        ("paper_concordance", (5 + 1) * 3),
        ("paper_magnitude", (2 + 4) * 3),
        # (6 conditions without BN/BM x 7 rates, DFA's x 9, 16 with BN+BM (6 rules, 5 claim-1
        # variants, 5 concordances) x 6 bm_lr) x seeds
        ("biotorch_fashion", (6 * 7 + 9 + 16 * 6) * 3),
        ("biotorch_mnist", (6 * 7 + 9 + 16 * 6) * 3),  # biotorch_fashion's grid
        ("bm_study", (2 * 2 * 2 * 6 + 2 * 2) * 2),  # rules x sign_of x scope x bm_lr + bp refs
        ("biotorch_fashion_cpu", 26 * 3),  # its 23 conditions at the pilot's rates, 3 at two
        ("biotorch_fashion_protocol", 6),  # six rules without BN/BM, one seed
        ("biotorch_cifar10", ((1 + 4) + (1 + 4) * 6) * 3),  # BN at biotorch's lr; BN+BM x 6 bm_lr
        # (7 rules + sc + 2 per-module mixes + 2 fine-tunings) x (none, bm) x 3 seeds
        ("transformer_rules", (7 + 1 + 2 + 2) * 2 * 3),
        ("robustness", (6 + 2) * 3),  # 6 rules at one rate, kp at two, x 3 seeds
    ],
)
def test_presets_expand_to_the_expected_jobs_and_each_composes(preset, jobs):
    expanded = expand(preset)
    assert len(expanded) == jobs
    assert len({tuple(sorted(job)) for job in expanded}) == jobs
    # every arm composes and validates: a spread of jobs (composing all 435 takes minutes)
    for job in expanded[:: max(1, len(expanded) // 40)]:
        cfg = compose_config(f"experiment={preset}", *job)
        validate(cfg)
        # the cpu and protocol presets write into biotorch_fashion's folder: their runs are
        # that grid's (the protocol's at 100 epochs are its own configs, as the full grid's)
        shared = {"biotorch_fashion_cpu", "biotorch_fashion_protocol"}
        assert cfg.exp_name == ("biotorch_fashion" if preset in shared else preset)


def test_biotorch_presets_follow_their_protocol():
    cfg = compose_config("experiment=biotorch_fashion", "feedback=usf", "norm=none")
    assert (cfg.dataset.name, cfg.dataset.image_size, cfg.model.init) == (
        "fashion_mnist",
        32,
        "xavier",
    )
    assert (cfg.batch_size, cfg.epochs, list(cfg.optimizer.milestones)) == (64, 100, [50, 75])
    assert (cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (0.9, 0.001)
    assert compose_config("experiment=biotorch_mnist").dataset.name == "mnist"
    jobs = [settings(job) for job in expand("biotorch_fashion", "seed=0")]
    without = [job for job in jobs if job["norm"] == "none"]
    # biotorch's draws without BN/BM: uSF at the init std, brSF/frSF/FA at Xavier-uniform's bound
    scales = {(job["feedback"], job.get("feedback.scale")) for job in without}
    assert {scale for rule, scale in scales if rule in ("brsf", "frsf", "rndf")} == {"init_bound"}
    assert {scale for rule, scale in scales if rule == "usf"} == {"init_std", "1.0"}
    assert {job.get("feedback.draw") for job in jobs if job["feedback"] == "dfa"} == {"biotorch"}
    # every condition's rate over three decades, bm_lr over more than two
    rates = {0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1}
    for rule in ("bp", "usf", "brsf", "frsf", "rndf"):
        assert {float(j["optimizer.lr"]) for j in without if j["feedback"] == rule} == rates
    # DFA's goes two steps lower (the pilot chose 1e-4, the old grid's edge)
    dfa = {float(j["optimizer.lr"]) for j in without if j["feedback"] == "dfa"}
    assert dfa == rates | {0.00001, 0.00003}
    stabilized = [job for job in jobs if job["norm"] == "bn_bm"]
    bm_rates = {float(job["optimizer.bm_lr"]) for job in stabilized}
    assert min(bm_rates) == 1e-5 and max(bm_rates) == 3e-3
    assert all("optimizer.lr" not in job for job in stabilized)
    concordances = {job.get("feedback.concordance") for job in jobs if job["feedback"] == "sc"}
    assert concordances == {"0", "0.25", "0.5", "0.75", "1.0"}  # claim 2: five levels
    magnitudes = {(j["feedback"], j.get("feedback.magnitude"), j.get("feedback.scale"))
                  for j in stabilized if j["feedback"] in ("brsf", "frsf")}  # fmt: skip
    assert magnitudes == {
        (rule, magnitude, scale)
        for rule in ("brsf", "frsf")
        for magnitude, scale in ((None, "init_bound"), ("uniform", "1.0"), ("half_normal", "1.0"))
    }  # claim 1: biotorch's draws, the paper's uniform and half-normal


@pytest.mark.slow
def test_cpu_and_protocol_presets_runs_are_the_full_presets_runs():
    # biotorch_fashion_cpu fixes each condition's rate: each of its runs is one of
    # biotorch_fashion's (the same run directory), one per condition, so a later full-grid run
    # reuses them; biotorch_fashion_protocol's are the full grid's runs of its six rules.
    def run_ids(preset, *overrides):
        jobs = expand(preset, "seed=0", *overrides)
        return {runs.run_id(compose_config(f"experiment={preset}", *job)) for job in jobs}

    cpu, full = run_ids("biotorch_fashion_cpu"), run_ids("biotorch_fashion")
    assert len(cpu) == 26 and cpu < full
    rates = ("optimizer.lr", "optimizer.bm_lr", "seed")

    def conditions(preset):
        jobs = [settings(job) for job in expand(preset, "seed=0")]
        return {frozenset((k, v) for k, v in job.items() if k not in rates) for job in jobs}

    assert conditions("biotorch_fashion_cpu") == conditions("biotorch_fashion")  # all 23
    protocol = run_ids("biotorch_fashion_protocol")
    assert len(protocol) == 6 and protocol < cpu


def test_multistep_schedule_divides_at_the_milestones():
    cfg = compose_config("experiment=biotorch_fashion", "dataset=synthetic", "norm=none")
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optimizer.lr)
    scheduler = make_scheduler(cfg, optimizer)
    rates = []
    for _ in range(80):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    lr = cfg.optimizer.lr
    assert (
        rates[49] == lr
        and rates[50] == pytest.approx(lr / 10)
        and rates[75] == pytest.approx(lr / 100)
    )
    bad = compose_config("experiment=biotorch_fashion", "optimizer.milestones=[]")
    with pytest.raises(ConfigError, match="optimizer.milestones"):
        validate(bad)


def test_paper_concordance_is_sc_at_five_fractions_plus_rndf():
    rules = sorted(
        (s["feedback"], s.get("feedback.concordance", "-"))
        for s in map(settings, expand("paper_concordance", "seed=0"))
    )
    assert rules == [("rndf", "-")] + [("sc", p) for p in ("0", "0.25", "0.5", "0.75", "1.0")]
    assert {settings(job)["norm"] for job in expand("paper_concordance")} == {"bn_bm"}


def test_paper_table_covers_every_rule_and_stabilization():
    combos = {(s["feedback"], s["norm"]) for s in map(settings, expand("paper_table"))}
    assert combos == {
        (f, n) for f in ("bp", "usf", "brsf", "frsf", "rndf") for n in ("none", "bn", "bm", "bn_bm")
    }


def test_command_line_overrides_the_preset_sweep():
    jobs = expand("paper_table", "seed=7", "dataset=digits,synthetic")
    assert len(jobs) == 5 * 4 * 2
    assert {settings(j)["seed"] for j in jobs} == {"7"}
    assert {settings(j)["dataset"] for j in jobs} == {"digits", "synthetic"}


def test_without_arms_it_is_the_basic_cartesian_product():
    jobs = expand(None, "feedback=bp,usf", "seed=0,1,2")
    assert sorted(map(tuple, jobs)) == sorted(
        (f"feedback={f}", f"seed={s}") for f in ("bp", "usf") for s in ("0", "1", "2")
    )


def done_runs(root):
    return sorted(p.parent.name for p in root.rglob("DONE"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        [
            "hydra/launcher=submitit_local",
            "hydra.launcher.tasks_per_node=1",
            "hydra.launcher.cpus_per_task=1",
        ],
        ["hydra/launcher=gpu", "hydra.launcher.n_jobs=2", "device=cpu"],
    ],
    ids=["joblib", "submitit_local", "gpu"],
)
def test_parallel_launchers_finish_a_small_sweep(tmp_path, launcher):
    out = tmp_path / "outputs"
    result = run_cli(
        "-m", *launcher, "feedback=bp,usf", *SMALL, f"output_root={out}", "exp_name=par"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    done = done_runs(out)
    assert [name.split("_")[3] for name in done] == ["bp", "usf"]
    threads = {OmegaConf.load(p).threads for p in out.rglob("config.yaml")}
    assert threads == {max(1, (os.cpu_count() or 1) // 2)}  # cores / 2 jobs, or cpus_per_task


def test_the_gpu_launcher_runs_n_at_a_time_one_at_a_time_handed_out():
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher") and launcher.n_jobs == 8
    assert str(launcher.batch_size) == "1"  # the last runs never wait behind a batch


@pytest.mark.parametrize(
    "device, job, gpus, expected",
    [
        ("auto", 5, 4, "cuda:1"),  # job k on GPU k mod 4
        ("cuda", 0, 2, "cuda:0"),
        ("cuda", 3, 2, "cuda:1"),
        ("auto", 7, 1, "auto"),  # one GPU, or none: nothing to share
        ("auto", 7, 0, "auto"),
        ("cpu", 3, 4, "cpu"),  # asked for the CPU
        ("cuda:2", 0, 4, "cuda:2"),  # asked for one GPU by index
    ],
)
def test_sweep_jobs_take_the_gpus_round_robin(device, job, gpus, expected):
    assert jobs.round_robin(device, job, gpus) == expected


def test_outside_a_sweep_the_device_is_left_as_given():
    assert jobs.job_device("auto") == "auto" and jobs.job_device("cuda") == "cuda"


@pytest.mark.parametrize(
    "device, message",
    [
        ("gpu", "device='gpu' is out of range: auto, cpu, cuda or cuda:K"),
        ("cuda:x", "device='cuda:x' is out of range"),
        ("cuda:-1", "device='cuda:-1' is out of range"),
    ],
)
def test_a_bad_device_is_one_config_error(make_config, device, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(make_config(f"device={device}"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_refused(make_config, device):
    with pytest.raises(ConfigError, match="no CUDA device is available: use device=auto or cpu"):
        validate(make_config(f"device={device}"))


@pytest.mark.slow
def test_reproduce_demo_profile_writes_the_report_with_every_row(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "scripts/reproduce_paper.py", "--profile", "demo", "--out", str(out),
         "--epochs", "1", "--train-subset", "200"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = out / "report"
    for name in ("runs.csv", "history.csv", "summary.csv", "table_paper.md", "table_paper.tex"):
        assert (report / name).stat().st_size > 0, name
    table = (report / "table_paper.md").read_text()
    for rule in ("bp", "usf", "brsf", "frsf", "rndf"):
        for stabilization in ("none", "BN", "BM", "BN+BM"):
            assert re.search(rf"^\| {rule} +\| {re.escape(stabilization)} +\|", table, re.M), (
                rule,
                stabilization,
            )
    for p in ("0", "0.25", "0.5", "0.75", "1"):
        assert f"sc (p={p})" in table
    assert table in result.stdout  # the table is printed at the end
    runs = pd.read_csv(report / "runs.csv")
    assert len(runs) == 20 + 5  # rndf BN+BM is shared by both presets


def test_fashion_full_profile_is_the_biotorch_grid_at_the_pilots_rates():
    spec = importlib.util.spec_from_file_location("reproduce", REPO / "scripts/reproduce_paper.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # its dataclasses look their module up there
    spec.loader.exec_module(script)
    profile = script.PROFILES["fashion_full"]
    assert profile.presets == ("biotorch_fashion_cpu",) and profile.seeds == 3
    jobs = expand("biotorch_fashion_cpu", *profile.overrides, "seed=0,1,2")
    assert len(jobs) == 78
    for job in jobs[:: len(jobs) // 6]:
        cfg = compose_config("experiment=biotorch_fashion_cpu", *profile.overrides, *job)
        validate(cfg)
        assert cfg.epochs == 24 and list(cfg.optimizer.milestones) == [12, 18]
    selected = profile.report[1::2]
    assert profile.report[::2] == ("--select",) * len(selected)
    assert {"optimizer.lr", "optimizer.bm_lr"} == set(selected)


@pytest.mark.slow
def test_interrupted_sweep_reruns_only_the_missing_jobs(tmp_path):
    out = tmp_path / "outputs"
    args = [
        sys.executable, "-m", "asymbp.train", "-m", "feedback=bp,usf,brsf,frsf", "seed=0,1",
        *SMALL, "epochs=2", "threads=1", "progress=false", f"output_root={out}", "exp_name=resume",
    ]  # fmt: skip
    sweep = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(done_runs(out)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    sweep.kill()
    sweep.wait()
    finished_before = len(done_runs(out))
    assert 3 <= finished_before < 8

    rerun = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    skipped = rerun.stdout.count("skipped (already done)")
    trained = sum(line.startswith("test_acc=") for line in rerun.stdout.splitlines())
    assert (skipped, trained) == (finished_before, 8 - finished_before)
    assert len(done_runs(out)) == 8

    report = tmp_path / "report"
    assert aggregate([str(out), "--out", str(report), "--no-figures"]) == 0
    runs = pd.read_csv(report / "runs.csv")
    assert len(runs) == 8 and runs["run"].is_unique and set(runs["status"]) == {"done"}


# A bad job fails alone (issue 15, item 8) --------------------------------------------------------


def _sweep_failure_checks(result, out, failed_line: str, finished: int):
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert f"asymbp-train: error: {failed_line}" in result.stderr
    assert "asymbp-train: 1 of " in result.stderr and "jobs failed:" in result.stderr
    assert len(done_runs(out)) == finished
    (failed,) = list(out.rglob(runs.FAILED))
    assert failed.read_text().splitlines()[0] == failed_line
    assert (failed.parent / runs.CONFIG).exists() and not (failed.parent / runs.DONE).exists()
    return failed.parent


@pytest.mark.slow
def test_a_bad_job_fails_alone_and_the_sweep_ends_non_zero(tmp_path):
    out = tmp_path / "outputs"
    result = run_cli(
        "-m", "feedback=sc", "feedback.concordance=0.5,2,0.25", *SMALL, "threads=1",
        "progress=false", f"output_root={out}", "exp_name=bad",
    )  # fmt: skip
    line = "feedback.concordance=2 is out of range: a number in [0, 1]"
    run_dir = _sweep_failure_checks(result, out, line, finished=2)
    assert run_dir.name.startswith("synthetic_paper_cnn_sc2_")
    assert [name.split("_")[3] for name in done_runs(out)] == ["sc0.25", "sc0.5"]


@pytest.mark.slow
def test_a_missing_dataset_fails_alone_under_joblib(tmp_path):
    out = tmp_path / "outputs"
    missing = tmp_path / "nowhere"
    result = run_cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "dataset=fashion_mnist,digits",
        f"data_root={missing}", "epochs=1", "train_subset=300", "model=mlp", "progress=false",
        f"output_root={out}", "exp_name=missing",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert [name.split("_")[0] for name in done_runs(out)] == ["digits"]
    (failed,) = list(out.rglob(runs.FAILED))
    assert failed.read_text().startswith(
        f"fashion_mnist: no train-images-idx3-ubyte(.gz) in {missing}"
    )
    assert "asymbp-train: 1 of 2 jobs failed:" in result.stderr


def test_a_later_successful_start_removes_the_failed_record(make_config):
    cfg = make_config(*SMALL)
    run_dir = runs.run_directory(cfg)
    assert runs.write_failed(run_dir, "fashion_mnist: no files\nmore", "seed: 0\n")
    assert (run_dir / runs.FAILED).read_text() == "fashion_mnist: no files\nmore\n"
    run(cfg)
    assert not (run_dir / runs.FAILED).exists() and (run_dir / runs.DONE).exists()
    assert not runs.write_failed(run_dir, "late failure", None)  # a finished run is left alone
    assert not (run_dir / runs.FAILED).exists()


@pytest.mark.slow
def test_a_sweep_job_whose_run_directory_is_busy_is_skipped_and_reported(tmp_path):
    out = tmp_path / "outputs"
    args = [*SMALL, "threads=1", "progress=false", f"output_root={out}", "exp_name=busy"]
    run_dir = runs.run_directory(compose_config(*args, "seed=0"))
    with lock_held_elsewhere(run_dir):
        result = run_cli("-m", "seed=0,1", *args)
    assert result.returncode == 1
    assert "being written by another process" in result.stderr
    assert [name.split("_")[7] for name in done_runs(out)] == ["s1"]
    assert not (run_dir / runs.FAILED).exists()  # the other writer's run is not marked failed


# Workers end with their parent (issue 15, item 12) ---------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_killing_a_joblib_sweep_ends_its_workers(tmp_path, launcher="joblib"):
    """Both runs train at once, each in its own worker process, and die with the sweep. (The gpu
    launcher is joblib with other settings: the workers' watch is the same code, asymbp.jobs.)"""
    out = tmp_path / "outputs"
    args = [
        sys.executable, "-m", "asymbp.train", "-m", f"hydra/launcher={launcher}",
        "hydra.launcher.n_jobs=2", "seed=0,1", *SMALL, "epochs=1000", "progress=false",
        f"output_root={out}", "exp_name=orphans",
    ]  # fmt: skip
    sweep = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(out.rglob(runs.CHECKPOINT))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(list(out.rglob(runs.CHECKPOINT))) == 2, "the workers did not start"
    assert orphans_after_killing(sweep) == []
    histories = {p: p.stat().st_mtime_ns for p in out.rglob(runs.HISTORY)}
    time.sleep(1.0)
    assert histories == {p: p.stat().st_mtime_ns for p in out.rglob(runs.HISTORY)}


@pytest.mark.slow
def test_ctrl_c_ends_a_sweep_with_one_line_and_130(tmp_path):
    args = ["-m", "seed=0,1", *SMALL, "epochs=500", "threads=1", "progress=false"]
    last = ctrl_c_after_the_first_checkpoint(args, tmp_path / "outputs")
    assert last.startswith("asymbp-train: sweep interrupted;")


def test_dry_run_lists_each_jobs_run_directory_and_state_and_trains_nothing(tmp_path):
    from asymbp.train import run

    out = tmp_path / "outputs"
    base = [*SMALL, f"output_root={out}", "exp_name=dry", "progress=false", "threads=1"]
    dirs = {}
    for rule in ("bp", "usf", "frsf"):
        cfg = compose_config(*base, f"feedback={rule}")
        dirs[rule] = runs.run_directory(cfg)
        if rule != "frsf":
            run(cfg)
    (dirs["usf"] / runs.DONE).unlink()  # interrupted after its last checkpoint: resumable
    before = sorted(p for p in out.rglob("*"))
    result = run_cli("-m", *base, "feedback=bp,usf,frsf", "dry_run=true")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["finished", str(dirs["bp"])]
    assert lines[1].split()[:2] == ["resumable", str(dirs["usf"])]
    assert lines[2].split()[:2] == ["new", str(dirs["frsf"])]
    assert lines[3] == "3 jobs: 1 finished, 1 resumable, 1 new (dry run: nothing launched)"
    assert sorted(p for p in out.rglob("*")) == before  # nothing written, no sweep folder
    single = run_cli(*base, "feedback=frsf", "dry_run=true")
    assert single.returncode == 0 and single.stdout.split()[:2] == ["new", str(dirs["frsf"])]
    assert not dirs["frsf"].exists()


def test_the_sweep_report_is_off_with_its_key_and_on_a_dry_run(tmp_path):
    for off in ({"sweep_report": False}, {"sweep_report": True, "dry_run": True}):
        cfg = OmegaConf.create({"output_root": str(tmp_path), "exp_name": "x", **off})
        assert jobs.sweep_report(cfg) is None
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.parametrize("report", [True])
def test_a_sweep_ends_with_its_report_unless_turned_off(tmp_path, report):
    out = tmp_path / "outputs"
    small = [a for a in SMALL if not a.startswith("epochs")]
    result = run_cli("-m", *small, "seed=0,1", "epochs=1,0", f"output_root={out}",
                     "exp_name=rep", "progress=false", f"sweep_report={report}")  # fmt: skip
    assert result.returncode == 1  # epochs=0 fails twice; the report is made all the same
    folder = out / "rep" / "report"
    assert folder.exists() == report
    if report:
        summary = pd.read_csv(folder / "summary.csv")
        assert sorted(zip(summary["n"], summary["n_failed"], strict=True)) == [(0, 2), (2, 0)]
        runs_csv = pd.read_csv(folder / "runs.csv")
        assert sorted(runs_csv["status"]) == ["done", "done", "failed", "failed"]
        assert f"sweep report in {folder}" in result.stderr
