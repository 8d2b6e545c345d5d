"""The accelerator benchmark script runs end to end (tiny shapes on CPU), so it is ready for a GPU or TPU host."""

import json

import pytest

from benchmarks import device


@pytest.mark.slow
def test_device_benchmark_runs_on_cpu_with_tiny_shapes(tmp_path, capsys):
    out = tmp_path / "device.json"
    assert device.main(["--tiny", "--budget", "1e9", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
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
