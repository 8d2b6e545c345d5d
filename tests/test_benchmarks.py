"""The benchmark scripts: the accelerator one runs end to end (tiny shapes on CPU), so it is ready for a GPU or TPU
host; the CPU one (`make bench`) times its two sides in alternating blocks."""

import datetime
import json
import re
import subprocess

import numpy as np
import pytest

from benchmarks import device, record, vs_commit
from tests.conftest import stand_in_params


@pytest.mark.slow
def test_device_benchmark_runs_on_cpu_with_tiny_shapes(tmp_path, capsys):
    out = tmp_path / "device.json"
    assert device.main(["--tiny", "--budget", "1e9", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["command"].endswith(f"python -m benchmarks.device --tiny --budget 1e9 --json {out}")
    assert {"commit", "device", "host", "date"} <= set(written)
    rows = written["rows"]
    values = {(r["section"], r["what"].split(":")[0]): r["value"] for r in rows}
    assert not [r for r in rows if r["value"] in ("failed", "skipped")], rows
    assert {r["section"] for r in rows} == {"attention", "encoder", "train", "decoder", "bf16"}
    for r in rows:
        if r["section"] == "attention":  # every implementation computes the reference function
            assert r["value"] < 0.03, r
        if r["section"] in ("encoder", "decoder", "train"):
            assert r["value"] > 0, r
    assert any(k[0] == "train" for k in values)
    assert "| section | measurement |" in capsys.readouterr().out


def test_profile_summarises_the_ops_of_a_traced_workload(tmp_path, capsys):
    """benchmarks.profile traces a workload and prints its busiest ops; --hlo writes the optimised HLO."""
    from benchmarks import profile  # noqa: PLC0415

    assert profile.main(["--what", "decoder", "--tiny", "--batch", "4", "--iters", "2", "--top", "5",
                         "--hlo", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "device busy" in out and "| op (hlo_op) | ms per call |" in out, out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "ms per call" not in line]
    assert len(rows) >= 5 and all(float(r.split("|")[2]) >= 0 for r in rows), rows
    assert list(tmp_path.glob("decoder_vit_b_b4_auto.hlo.txt.gz"))


# A small training step (2 images x 2 masks, one encoder block, one decoder layer; 3 prompt rounds, the first and
# two clicks, so that scanning and unrolling the two later rounds are different programs: a scan over one round, as
# in tiny_synthetic, lowers the same either way), with AdamW: tiny_synthetic's Muon adds a Newton-Schulz iteration
# per kernel to every compile, and this test is about the harness, not the optimiser.
SMALL_STEP = ["--config.data.batch_size=2", "--config.data.max_masks_per_image=2", "--config.model.encoder_depth=1",
              "--config.model.encoder_global_attn_indexes=(0,)", "--config.model.decoder_depth=1",
              "--config.prompts.num_click_rounds=2", "--config.optim.kind=adamw"]


def test_train_ab_times_variants_from_the_same_start(tmp_path, capsys, monkeypatch):
    """benchmarks.train_ab: rounds scanned / unrolled are the same maths compiled two ways, so from the same
    parameters and batch both report the same loss after the same steps; the table and JSON are written. A variant
    that needs more device memory than the limit (8x the batch: ~0.16 GiB against the others' ~0.03) is named as
    skipped and the others are timed."""
    from benchmarks import train_ab  # noqa: PLC0415

    # Random values of the model's shapes instead of the jitted init (its compile is ~8 s here; the device bench's
    # test covers host_params).
    monkeypatch.setattr(train_ab, "host_params", lambda mc: stand_in_params(mc, scale=0.02))
    out_json = tmp_path / "ab.json"
    result = train_ab.main(["--steps", "2", "--json", str(out_json), "--memory-gib", "0.08",
                            "--variant", "scan=--config.prompts.unroll_rounds=False",
                            "--variant", "big=--config.data.batch_size=16",
                            "--variant", "unrolled=--config.prompts.unroll_rounds=True", *SMALL_STEP])
    rows = result["rows"]
    assert [r["variant"] for r in rows] == ["scan", "unrolled"]
    assert [r["variant"] for r in result["skipped"]] == ["big"]
    need = re.fullmatch(r"does not fit: needs (\d+\.\d\d) GiB of device memory, the limit is 0\.08",
                        result["skipped"][0]["skipped"])
    assert need and 0.08 < float(need[1]) < 0.5, result["skipped"]
    for r in rows:
        assert r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"] and r["compile_s"] > 0, r
    assert rows[0]["loss"] == pytest.approx(rows[1]["loss"], rel=1e-4)
    assert json.loads(out_json.read_text())["rows"] == rows
    out = capsys.readouterr().out
    assert "| scan |" in out and "| unrolled |" in out and "shared overrides: --config.data.batch_size=2" in out
    assert "variant big: does not fit" in out and "| big | does not fit" in out
    assert "lower to the same program" not in out  # unroll_rounds changes the compiled step


def test_train_ab_rejects_malformed_variants():
    from benchmarks import train_ab  # noqa: PLC0415

    assert train_ab.parse_variant("dots=--config.prompts.remat_policy=dots_saveable") == (
        "dots", ["--config.prompts.remat_policy=dots_saveable"])
    assert train_ab.parse_variant("base=") == ("base", [])
    with pytest.raises(ValueError, match="NAME=OVERRIDES"):
        train_ab.parse_variant("--config.optim.lr=1e-3")
    with pytest.raises(ValueError, match="--config.FIELD=VALUE"):
        train_ab.parse_variant("lr=optim.lr=1e-3")
    with pytest.raises(SystemExit):  # a malformed variant: an argparse error, not a traceback
        train_ab.main(["--variant", "lr=optim.lr=1e-3", "--variant", "b=", *SMALL_STEP])
    with pytest.raises(SystemExit):
        train_ab.main(["--steps", "0", *SMALL_STEP])
    with pytest.raises(SystemExit):  # one variant is not an A/B
        train_ab.main(["--variant", "a=", *SMALL_STEP])
    with pytest.raises(SystemExit):
        train_ab.main(["--variant", "a=", "--variant", "a=--config.optim.lr=1e-3", *SMALL_STEP])


def test_train_ab_names_variants_that_compile_to_the_same_program():
    from benchmarks import train_ab  # noqa: PLC0415

    class Lowered:
        def __init__(self, text):
            self.text = text

        def as_text(self):
            return self.text

    runs = [{"name": n, "lowered": Lowered(t)} for n, t in (("a", "p1"), ("b", "p2"), ("c", "p1"), ("d", "p3"))]
    assert train_ab.same_programs(runs) == [["a", "c"]]
    assert train_ab.same_programs(runs[:2]) == []


def test_cpu_bench_alternates_the_two_sides_in_blocks():
    """`make bench` times samjax and the official code in alternating blocks, so both meet the same machine phases."""
    from benchmarks.cpu import side_by_side  # noqa: PLC0415

    order = []
    ours, official = side_by_side(lambda: order.append("a"), lambda: order.append("b"), rounds=3, calls=2)
    assert "".join(order) == "aabb" * 3
    assert ours >= 0 and official >= 0


def test_record_writes_the_run_metadata_beside_the_results(tmp_path):
    """Every benchmark's JSON: commit, the command that reproduces it, device, host, date; numpy values as JSON."""
    out = tmp_path / "sub" / "cpu.json"
    written = record.write(out, "cpu", ["--repeats", "1", "--sections", "prompt,amg"],
                           rows=[{"what": "x", "ratio": np.float32(0.5)}], shape=np.arange(2))
    assert json.loads(out.read_text()) == {**written, "rows": [{"what": "x", "ratio": 0.5}], "shape": [0, 1]}
    assert written["command"].endswith("python -m benchmarks.cpu --repeats 1 --sections prompt,amg")
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?|unknown", written["commit"]), written["commit"]
    assert written["device"] and written["host"]["cores"] >= 1
    date = datetime.datetime.fromisoformat(written["date"])
    assert date.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.UTC) - date) < datetime.timedelta(minutes=5)


def test_record_out_path_defaults_to_the_one_current_file_and_checks_write_nowhere(tmp_path):
    assert record.out_path(None, "cpu") == record.RESULTS / "cpu.json"
    assert record.out_path(str(tmp_path / "a.json"), "device", check=True) == tmp_path / "a.json"
    assert record.out_path(None, "device", check=True) is None  # --tiny never overwrites real figures


def test_record_commit_is_dirty_only_for_code_changes(tmp_path, monkeypatch):
    """A rewritten results file does not make the tree dirty; a changed tracked source file does."""
    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "benchmarks" / "results" / "cpu.json").write_text("{}\n")
    git("add", ".")
    git("commit", "-q", "-m", "x")
    head = git("rev-parse", "HEAD")
    monkeypatch.setattr(record, "ROOT", tmp_path)
    assert record.commit() == head
    (tmp_path / "benchmarks" / "results" / "cpu.json").write_text('{"rows": []}\n')
    (tmp_path / "untracked.py").write_text("")
    assert record.commit() == head
    (tmp_path / "code.py").write_text("a = 2\n")
    assert record.commit() == head + "+dirty"


def test_vs_commit_refuses_a_base_that_names_no_commit_before_building_anything(capsys):
    """benchmarks.vs_commit resolves --base first: a revision this repository lacks is an argparse error naming it,
    before any tree is unpacked or worker started (a real run compiles two training steps: minutes)."""
    assert re.fullmatch(r"[0-9a-f]{40}", vs_commit.resolve("HEAD"))
    with pytest.raises(SystemExit):
        vs_commit.main(["--base", "no-such-revision-xyz"])
    assert "--base 'no-such-revision-xyz' names no commit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        vs_commit.main(["--base", "HEAD", "--pairs", "0"])
    assert "--pairs must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --base is required
        vs_commit.main([])
