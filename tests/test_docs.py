"""Every command in the bash blocks of README.md, BUILD.md and docs/evaluation.md is exercised by a test or by CI,
so none can rot.

REGISTRY maps each command, as written in the docs (continuation lines joined, trailing comments dropped), to the
tests that exercise it. A command added to the docs without an entry fails `test_every_command_is_registered`; an
entry naming a test that does not exist fails `test_registry_names_real_tests`. Besides, every `python -m ...`
module shown (in the docs or in the Makefile recipes they name) must answer --help and accept every flag the docs
use; every `samjax.train` command line must load its experiment and apply its overrides; the cheap data commands
run for real in a tmp dir.
"""

from __future__ import annotations

import ast
import re
import runpy
import shlex
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

from tests.subprocess_env import repo_env

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "BUILD.md", "docs/evaluation.md")
CI = "CI: .ci/run"  # the command runs in CI (.ci/run -> make test on a clean clone)
D = "tests/test_docs.py::"
API, BROWSER, LOOP = (f"tests/test_annotate_{n}.py::" for n in ("api", "browser", "loop"))

# command -> (tests that exercise it; a note on how, where it is not the command verbatim)
REGISTRY: dict[str, tuple[tuple[str, ...], str]] = {
    "make demo": ((D + "test_make_targets", "tests/test_demo.py::test_make_demo_default"), ""),
    "make test": ((CI,), ".ci/run runs exactly this"),
    "python -m samjax.convert --checkpoint sam_vit_h_4b8939.pth --model vit_h --out ckpt/sam_vit_h": (
        ("tests/test_convert.py::test_vit_b_1024_official_pth_through_cli_matches_official",
         D + "test_module_commands"),
        "the CLI converts an official-format ViT-B .pth in the test (no ViT-H weights here)"),
    "python -m samjax.amg --checkpoint ckpt/sam_vit_h --input photos/ --output masks/ --convert-to-rle "
    "--points-per-side 32": (
        ("tests/test_amg_cli.py::test_folder_to_png_masks_then_rerun_skips",
         "tests/test_amg_cli.py::test_single_image_to_coco_json", D + "test_module_commands"),
        "on a tiny trained model"),
    'pip install -e ".[text]"': ((D + "test_pip_extras_exist", CI),
                                 "the extra exists and lists the text prompts' packages; CI installs it through "
                                 "[torch], whose test references need it"),
    'python -m samjax.ground --detector owlv2-base-patch16-ensemble --checkpoint ckpt/sam_vit_h --images photos/ '
    '--text "dog, red car" --out found/': (
        ("tests/text/test_ground.py::test_cli_writes_coco_resumes_and_refuses_bad_input", D + "test_module_commands"),
        "a tiny random OWLv2 saved as a Hugging Face directory, a tiny random SAM"),
    'python -m samjax.amg --checkpoint ckpt/sam_vit_h --input photos/ --output masks/ --labels "cat,sofa,lamp" '
    '--clip clip-vit-base-patch32': (
        ("tests/text/test_labels.py::test_cli_writes_labels_to_json_and_csv", D + "test_module_commands"),
        "a tiny random CLIP saved by samjax.weights.clip.save_clip, a tiny random SAM"),
    "python -m samjax.train --experiment=text_prompt --workdir=runs/text_prompt --config.init.path=ckpt/sam_vit_h "
    "--config.objective.clip_path=clip-vit-large-patch14-336 "
    "--config.data.train_files='/data/sa1b/tfrecord/*.tfrecord'": (
        (D + "test_train_command_lines",
         "tests/text/test_text_prompt.py::test_text_prompt_objective_trains_sam_with_clip_crops",
         "tests/text/test_text_prompt.py::test_exported_model_answers_text_prompts"),
        "experiment and overrides checked; the experiment shrunk to a tiny SAM and a tiny random CLIP trains 6 steps "
        "from a checkpoint and its export answers text prompts"),
    "make train": ((D + "test_make_targets", D + "test_train_command_lines",
                    "tests/test_notebooks.py::test_notebook_runs"),
                   "the notebooks train tiny_synthetic through samjax.train for 8 steps; the full 14-minute run is "
                   "not part of the suite"),
    "python -m samjax.train --experiment=sa1b_vith --workdir=/mnt/shared/sam_vith "
    "--config.data.train_files='/data/sa1b/tfrecord/*.tfrecord'": (
        (D + "test_train_command_lines", "tests/test_train_tpu_aot.py::test_training_dry_run_for_a_small_slice"),
        "experiment and overrides checked; the ViT-H step is compiled ahead of time where libtpu is installed"),
    "python -m samjax.train --experiment=finetune --workdir=ft --config.init.path=ckpt/sam_vit_b "
    "--config.data.train_files='/data/mine_tfrecord/*.tfrecord' --config.optim.freeze_image_encoder=True": (
        (D + "test_train_command_lines", "tests/test_notebooks.py::test_notebook_runs"),
        "finetune.ipynb runs the finetune experiment from a model directory"),
    "gcloud compute tpus tpu-vm ssh sam-pod --zone=us-east5-a --worker=all --command=\"cd samjax && pip install -e "
    "'.[tpu]'\"": ((D + "test_pip_extras_exist",), "the [tpu] extra is checked; gcloud itself is not run here"),
    "gcloud compute tpus tpu-vm ssh sam-pod --zone=us-east5-a --worker=all --command=\"cd samjax && python -m "
    "samjax.train --experiment=sa1b_vith --workdir=/mnt/shared/sam_vith "
    "--config.data.train_files='/mnt/shared/sa1b/tfrecord/*.tfrecord'\"": (
        (D + "test_train_command_lines", "tests/test_fit.py::test_choose_takes_the_first_rung_that_fits_with_headroom"),
        "the inner command's experiment and overrides are checked, and the fit rule that picks its mesh and remat; "
        "the dry run above compiles it for the slice; gcloud itself is not run here"),
    'python -m venv .venv-tpu && .venv-tpu/bin/pip install -e ".[tpu]"': (
        (D + "test_pip_extras_exist", "tests/test_train_tpu_aot.py::test_training_dry_run_for_a_small_slice"),
        "the [tpu] extra is checked; the dry run needs libtpu (skipped without it)"),
    "JAX_PLATFORMS=cpu .venv-tpu/bin/python -m samjax.train --experiment=sa1b_vith --workdir=/tmp/dry "
    "--aot=v5p:4x4x4": (
        (D + "test_train_command_lines", "tests/test_train_tpu_aot.py::test_training_dry_run_for_a_small_slice"),
        "the tpu_aot test runs the same dry run for a small slice (needs libtpu); make bench-tpu runs this one"),
    'pip install -e ".[cuda]"': ((D + "test_pip_extras_exist",), "the extra exists and is jax[cuda12]; no GPU here"),
    "python -m samjax.train --experiment=sa1b_vitb --workdir=runs/sa1b_vitb "
    "--config.data.train_files='/data/sa1b/tfrecord/*.tfrecord' --config.mesh.fsdp=8": (
        (D + "test_train_command_lines", "tests/test_train_distributed.py::test_fsdp_8_devices_equals_1_device"),
        "FSDP over 8 (simulated) devices is tested on a tiny model"),
    "python -m samjax.plot workdir/tiny_synthetic --out curves.png": (
        ("tests/test_notebooks.py::test_documented_commands_on_a_training_workdir",
         "tests/test_plot.py::test_cli_writes_png"),
        "on the workdir of a real (8-step) tiny_synthetic run"),
    'python -m samjax.evaluate tfrecord --checkpoint workdir/tiny_synthetic/model --data '
    '"workdir/tiny_synthetic/data/eval/*.tfrecord"': (
        ("tests/test_notebooks.py::test_documented_commands_on_a_training_workdir",),
        "on the workdir of a real (8-step) tiny_synthetic run"),
    # docs/evaluation.md: the paper's protocols with an official checkpoint and the public datasets (none here);
    # the same tasks and flags run end to end on a tiny model and synthetic data in tests/evaluate/test_cli.py
    'pip install -e ".[eval]"': (
        (D + "test_pip_extras_exist", "tests/evaluate/test_protocols.py::test_lvis_ap_of_perfect_masks"),
        "the extra exists; lvis's AP is tested where the package is installed"),
    "python -m samjax.evaluate points --checkpoint ckpt/sam_vit_h --data sa23/ade20k/annotations.json "
    "sa23/lvis/annotations.json --images sa23/ade20k/images sa23/lvis/images --out eval/points": (
        (D + "test_module_commands", "tests/evaluate/test_cli.py::test_points_resumes_and_reports_per_dataset"),
        "two COCO-format datasets of synthetic shapes, a tiny random model"),
    "python -m samjax.evaluate edges --checkpoint ckpt/sam_vit_h --data BSR/BSDS500 --out eval/edges --workers 8": (
        (D + "test_module_commands", "tests/evaluate/test_cli.py::test_edges",
         "tests/evaluate/test_cli.py::test_edges_matching_in_worker_processes"),
        "a BSDS500-layout folder of synthetic shapes (.mat ground truth), 2 workers"),
    "python -m samjax.evaluate proposals --checkpoint ckpt/sam_vit_h --data lvis/lvis_v1_val.json --images coco "
    "--out eval/proposals": (
        (D + "test_module_commands", "tests/evaluate/test_cli.py::test_proposals_and_instances",
         "tests/evaluate/test_protocols.py::test_ground_truth_as_proposals_recalls_everything"),
        "COCO-format synthetic data through the CLI; an LVIS-format file by frequency in the protocol test"),
    "python -m samjax.evaluate instances --checkpoint ckpt/sam_vit_h --data coco/annotations/instances_val2017.json "
    "--images coco/val2017 --detections vitdet_h_coco_val2017.json --out eval/instances_coco": (
        (D + "test_module_commands", "tests/evaluate/test_cli.py::test_proposals_and_instances"),
        "ground-truth boxes as the detections"),
    "python -m samjax.evaluate instances --checkpoint ckpt/sam_vit_h --data lvis/lvis_v1_val.json --images coco "
    "--detections vitdet_h_lvis_v1_val.json --out eval/instances_lvis": (
        (D + "test_module_commands", "tests/evaluate/test_protocols.py::test_lvis_ap_of_perfect_masks"),
        "LVIS AP (the lvis package) of an LVIS-format synthetic file"),
    "python -m samjax.data.synthetic --out data/synthetic/raw --num-images 16 --size 96x128": (
        (D + "test_data_commands_run",), "run verbatim in a tmp dir"),
    "python -m samjax.data.sa1b --input data/synthetic/raw --output data/synthetic/tfrecord --num-shards 2": (
        (D + "test_data_commands_run",), "run verbatim in a tmp dir"),
    "python -m samjax.data.coco --annotations mine/instances.json --images mine/images --output mine/tfrecord "
    "--num-shards 2": (
        (D + "test_module_commands",
         "tests/data/test_coco.py::test_convert_every_segmentation_form_and_skip_what_is_unusable"),
        "same flags on a generated COCO file (polygons, both RLE forms, PNG, greyscale, broken files) in a tmp dir"),
    "pip install -e .": ((CI, D + "test_make_targets"),
                         "CI installs -e '.[torch,dev]', a superset; make demo/train install exactly this"),
    'pip install -e ".[tpu]"': ((D + "test_pip_extras_exist",), "the extra exists and is jax[tpu]; no TPU here"),
    'pip install -e ".[torch,dev]"': ((CI, D + "test_make_targets"), "what make test installs"),
    "make test-fast": ((D + "test_make_targets",), "its recipe and the slow marker are checked; CI runs make test"),
    "make lint": ((CI, D + "test_make_targets"), ".ci/run runs it before make test; its recipe is checked"),
    "python -m pytest tests/test_notebooks.py": ((CI, "tests/test_notebooks.py::test_notebook_runs"), ""),
    "python -m pytest tests/test_docs.py": ((CI, D + "test_every_command_is_registered"), ""),
    'python -m venv /tmp/tpuvenv && /tmp/tpuvenv/bin/pip install -e ".[tpu,dev]"': (
        (D + "test_pip_extras_exist", "tests/test_train_tpu_aot.py::test_training_dry_run_for_a_small_slice"),
        "the environment the tpu_aot test needs; it is skipped where libtpu is missing (the CPU suite)"),
    "JAX_PLATFORMS=cpu /tmp/tpuvenv/bin/python -m pytest -m tpu_aot tests/test_train_tpu_aot.py -s": (
        ("tests/test_train_tpu_aot.py::test_training_dry_run_for_a_small_slice",),
        "skipped in the CPU suite (no libtpu); run by hand in that environment"),
    "make bench": ((D + "test_make_targets",),
                   "--help and flags only: the benchmark runs the official ViT-B for minutes"),
    "make bench-device": ((D + "test_make_targets",
                           "tests/test_benchmarks.py::test_device_benchmark_runs_on_cpu_with_tiny_shapes"),
                          "the same script with --tiny runs end to end on CPU; real sizes need an accelerator"),
    "make bench-tpu": ((D + "test_make_targets",), "--help only: compiling ViT-H for TPU takes many minutes on CPU"),
    "python -m benchmarks.device --tiny": (
        (D + "test_module_commands", "tests/test_benchmarks.py::test_device_benchmark_runs_on_cpu_with_tiny_shapes"),
        "exactly what the test runs (in-process)"),
    "python -m benchmarks.profile --what decoder --tiny": (
        (D + "test_module_commands", "tests/test_benchmarks.py::test_profile_summarises_the_ops_of_a_traced_workload"),
        "the test runs it in-process with a smaller batch and --hlo"),
    "python -m benchmarks.train_ab --variant \"full=\" --variant \"dots=--config.prompts.remat_policy=dots_saveable\" "
    "--config.prompts.remat_rounds=True": (
        (D + "test_module_commands", "tests/test_benchmarks.py::test_train_ab_times_variants_from_the_same_start"),
        "the test runs the default pair in-process on a smaller step"),
    "make bench-data": ((D + "test_make_targets", D + "test_bench_data_runs_small"), "run with tiny images"),
    "make bench-amg": ((D + "test_make_targets",),
                       "--help and flags only: the benchmark runs the official ViT-B for minutes"),
    "python -m samjax.data.bench --images 16 --size 1500x2250 --workers 0": (
        (D + "test_module_commands", D + "test_bench_data_runs_small"), "run with tiny images"),
    "python -m samjax.convert --checkpoint sam_hq_vit_l.pth --out ckpt/sam_hq_vit_l": (
        ("tests/test_family_convert.py::test_convert_auto_writes_a_family_model_dir", D + "test_module_commands"),
        "--model auto on an official-format checkpoint of each family (random weights; no official files here)"),
    "python -m samjax.amg --checkpoint ckpt/sam_hq_vit_l --input photos/ --output masks/ --points-per-side 32": (
        ("tests/test_family_convert.py::test_amg_cli_on_a_family_model_dir", D + "test_module_commands"),
        "on a tiny HQ-SAM model directory"),
    "python -m samjax.train --experiment=hq_finetune --workdir=hq --config.init.path=ckpt/sam_vit_l "
    "--config.data.train_files='/data/hqseg_tfrecord/*.tfrecord'": (
        (D + "test_train_command_lines", "tests/test_family_training.py::test_hq_finetune_trains_only_the_hq_layers"),
        "experiment and overrides checked; its step runs on a tiny HQ-SAM"),
    "python -m samjax.train --experiment=mobilesam_distill --workdir=mobilesam "
    "--config.objective.teacher_path=ckpt/sam_vit_h --config.data.train_files='/data/sa1b/tfrecord/*.tfrecord'": (
        (D + "test_train_command_lines", "tests/test_family_training.py::test_distill_through_the_training_loop"),
        "experiment and overrides checked; a tiny student and teacher run through samjax.train.train"),
    "pip install --no-deps segment-anything-hq==0.3 efficientsam==1.0.0": (
        (CI, D + "test_make_targets"), "make test's environment recipe runs exactly this"),
    "make figures": ((D + "test_make_targets", "tests/test_figures.py::test_cli_writes_small_png"),
                     "samjax.figures on a tiny model; make train (its prerequisite) as above"),
    # the annotation tool and the ONNX decoder
    "python -m samjax.annotate --images photos/ --checkpoint ckpt/sam_vit_b --out labels/": (
        (LOOP + "test_server_command_line", BROWSER + "test_click_mask_accept_reload", D + "test_module_commands"),
        "the command line with uvicorn.run stubbed; the page in headless Chromium against uvicorn on loopback"),
    "python -m samjax.annotate --images photos/ --checkpoint ckpt/sam_vit_b --out labels/ --prefill": (
        (LOOP + "test_annotate_convert_finetune_annotate_again", API + "test_prefill_adds_editable_model_masks",
         D + "test_module_commands"),
        "the app these flags build, in process, on a tiny model and synthetic images"),
    "python -m samjax.data.sa1b --input labels/ --output labels_tfrecord/ --num-shards 1": (
        (LOOP + "test_annotate_convert_finetune_annotate_again",), "run on the annotation round's output"),
    "python -m samjax.train --experiment=finetune --workdir=ft_round1 --config.init.path=ckpt/sam_vit_b "
    "--config.data.train_files='labels_tfrecord/*.tfrecord' --config.optim.freeze_image_encoder=True": (
        (LOOP + "test_annotate_convert_finetune_annotate_again", D + "test_train_command_lines"),
        "these flags plus the tiny model's fields and a 2-step schedule, on the converted annotations"),
    "python -m samjax.annotate --images photos/ --checkpoint ft_round1/model --out labels/ --prefill": (
        (LOOP + "test_annotate_convert_finetune_annotate_again",), "the fine-tuned tiny model's export"),
    "python -m samjax.annotate --images photos/ --checkpoint ckpt/sam_vit_b --out labels/ --host 0.0.0.0 --port 8000": (
        (LOOP + "test_server_command_line",), "uvicorn.run stubbed: the generated token is printed and required"),
    "python -m samjax.export_onnx --checkpoint ckpt/sam_vit_b --out decoder.onnx --return-single-mask": (
        ("tests/test_export_onnx.py::test_cli_writes_a_model_that_runs", D + "test_module_commands"),
        "on a tiny checkpoint; the graph's parity in the other tests of that file"),
    "npm install onnxruntime-web@1.31.1": (
        (CI, BROWSER + "test_browser_decode_with_onnxruntime_web"),
        ".ci/run installs exactly this version into a temporary folder and points SAMJAX_ORT_WEB at it"),
    "python -m samjax.annotate --images photos/ --checkpoint ckpt/sam_vit_b --out labels/ --browser-decode "
    "node_modules/onnxruntime-web": (
        (BROWSER + "test_browser_decode_with_onnxruntime_web", D + "test_module_commands"),
        "the page decodes with onnxruntime-web in headless Chromium (skipped, saying so, without SAMJAX_ORT_WEB)"),
    "python -m samjax.annotate.screenshots --checkpoint workdir/tiny_synthetic/model --out docs/": (
        (BROWSER + "test_screenshots_command", D + "test_module_commands"),
        "on a tiny random checkpoint into a tmp folder"),
    "python -m samjax.amg --checkpoint sam2.1_hiera_tiny.pt --input photos/ --output out/masks": (
        ("tests/sam2/test_sam2_amg.py::test_cli_on_sam2_directory", D + "test_module_commands"),
        "the CLI on a converted random-weight sam2.1_hiera_t directory at 128 px (no official SAM 2 weights here)"),
    'python -m samjax.video --checkpoint sam2.1_hiera_tiny.pt --frames frames/ --points "210,350;250,220,0" '
    "--out out/video": (
        ("tests/sam2/test_sam2_video.py::test_command_line_writes_masks_and_gif", D + "test_module_commands"),
        "the CLI on a tiny random SAM 2 directory and synthetic JPEG frames (no official SAM 2 weights here)"),
    "python -m samjax.train --experiment=sam2_finetune --workdir=ft2 --config.init.path=sam2.1_hiera_tiny.pt "
    "--config.data.train_files='/data/mine_tfrecord/*.tfrecord'": (
        (D + "test_train_command_lines",
         "tests/sam2/test_sam2_train.py::test_finetune_experiment_runs_and_exports_a_sam2_model"),
        "experiment and overrides checked; the experiment trains a tiny SAM 2 on synthetic data, "
        "from a model directory"),
    "SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2==1.1.0": (
        (D + "test_make_targets", "tests/sam2/test_sam2_video.py::test_video_predictor_matches_official"),
        "what make test's .full step runs; the SAM 2 parity tests need it (they skip without sam2)"),
}


def doc_commands() -> list[str]:
    """Every command line in the ```bash blocks of README.md and BUILD.md, in order."""
    out = []
    for name in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", (ROOT / name).read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s{2,}#.*$", "", line).strip()
                if line and not line.startswith("#"):
                    out.append(re.sub(r"\s+", " ", line))
    return out


def python_commands(command: str) -> list[list[str]]:
    """The `python -m MODULE ARGS` invocations in a shell command (also inside gcloud's --command="...")."""
    words = shlex.split(command)
    found = [args for w in words if w.startswith("--command=") for args in python_commands(w.split("=", 1)[1])]
    segment: list[str] = []
    for w in [*words, "&&"]:
        if w != "&&":
            segment.append(w)
            continue
        for i in range(len(segment) - 2):
            if segment[i].endswith("python") and segment[i + 1] == "-m":
                found.append(segment[i + 2:])
                break
        segment = []
    return found


def make_recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target, with $(BIN)/python written as python."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}:", line))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().replace("$(BIN)/python", "python").replace("$(BIN)/pip", "pip"))
    return recipe


def test_every_command_is_registered():
    commands = doc_commands()
    assert len(commands) > 20
    missing = [c for c in commands if c not in REGISTRY]
    assert not missing, "commands in the docs that no test exercises; add each to REGISTRY with its test:\n" + \
        "\n".join(missing)
    stale = [c for c in REGISTRY if c not in commands]
    assert not stale, "REGISTRY entries no longer in the docs:\n" + "\n".join(stale)


def _test_functions(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}


def test_registry_names_real_tests():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    for command, (tests, _) in REGISTRY.items():
        assert tests, command
        for test in tests:
            if test == CI:
                continue
            path, name = test.split("::")
            assert (ROOT / path).is_file(), f"{command}: {path} does not exist"
            assert name.startswith("test_") and name in _test_functions(ROOT / path), f"{command}: no {test}"


def _module_help(module: str, capsys, *before: str) -> str:
    """`python -m MODULE [BEFORE...] --help`, run in-process as __main__; its help text (exit status 0)."""
    argv = sys.argv
    sys.argv = [module, *before, "--help"]
    try:
        with warnings.catch_warnings(), pytest.raises(SystemExit) as e:
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module is imported already
            runpy.run_module(module, run_name="__main__", alter_sys=False)
    finally:
        sys.argv = argv
    assert e.value.code in (0, None), f"python -m {module} --help exited {e.value.code}"
    return capsys.readouterr().out


def check_module_command(args: list[str], capsys) -> None:
    """A `python -m samjax...` / `benchmarks...` command: --help works and knows every --flag used."""
    module, rest = args[0], args[1:]
    if not module.startswith(("samjax", "benchmarks")):
        return
    help_text = _module_help(module, capsys)
    if module == "samjax.evaluate" and rest and not rest[0].startswith("-"):  # a task: its own --help
        assert rest[0] in help_text, f"python -m samjax.evaluate: no task {rest[0]!r}"
        help_text = _module_help(module, capsys, rest[0])
    if module == "samjax.train":
        check_train_command(rest)
        return
    for flag in (a.split("=", 1)[0] for a in rest if a.startswith("--")):
        assert flag in help_text, f"python -m {module}: the docs use {flag}, which --help does not list"


def check_train_command(args: list[str]) -> None:
    """The command line parses (samjax.train.parse: --experiment loads, every --config override applies), the model
    config is valid, and a fixed mesh divides the global batch."""
    from samjax import train
    from samjax.training import config as training_config

    named, cfg = train.parse(args)
    assert {"--experiment", "--workdir"} <= set(named) <= {"--experiment", "--workdir", "--aot"}, args
    training_config.model_config(cfg)  # a valid SamConfig
    fixed = [s for s in (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor) if s != -1]
    shards = 1
    for s in fixed[:2] if cfg.mesh.tensor == 1 else fixed:
        shards *= s
    assert cfg.data.batch_size % shards == 0, f"global batch {cfg.data.batch_size} over {shards} batch shards"


def test_module_commands(capsys):
    shown = [args for c in doc_commands() for args in python_commands(c)]
    modules = {args[0] for args in shown}
    assert {"samjax.convert", "samjax.amg", "samjax.train", "samjax.plot", "samjax.evaluate", "samjax.data.synthetic",
            "samjax.data.sa1b", "samjax.data.bench", "samjax.ground"} <= modules
    for args in shown:
        check_module_command(args, capsys)


def test_train_command_lines():
    lines = [args[1:] for c in doc_commands() + make_recipe("train") for args in python_commands(c)
             if args[0] == "samjax.train"]
    assert len(lines) >= 5
    for args in lines:
        check_train_command(args)
    with pytest.raises(ValueError, match="no field .fdsp."):  # the check has teeth: a typo in a field is caught
        check_train_command(["--experiment=sa1b_vith", "--workdir=w", "--config.mesh.fdsp=8"])


def test_make_targets(capsys):
    """Each `make X` shown is a Makefile target; the python commands in its recipe take the flags they use."""
    targets = [c.split()[1] for c in doc_commands() if c.startswith("make ")]
    assert {"demo", "test", "train", "test-fast", "bench-data", "bench-amg", "figures"} <= set(targets)
    for target in targets:
        recipe = make_recipe(target)
        assert recipe, f"make {target}: no recipe"
        for line in recipe:
            for args in python_commands(line):
                check_module_command(args, capsys)
    assert make_recipe("$(VENV)/.core")[0] == "pip install -q -e ."
    assert make_recipe("$(VENV)/.full")[0] == 'pip install -q -e ".[torch,dev]"'
    assert "SAM2_BUILD_CUDA=0 pip install -q --no-deps --no-build-isolation sam2==1.1.0" in make_recipe("$(VENV)/.full")
    assert 'python -m pytest -m "not slow"' in make_recipe("test-fast")[0]
    assert make_recipe("test") == ["python -m pytest $(PYTEST_ARGS)"]
    assert make_recipe("lint") == ["$(BIN)/ruff check samjax benchmarks tests experiments"]
    assert "make lint" in (ROOT / ".ci" / "run").read_text()
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("slow:") for m in markers)


def test_pip_extras_exist():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    shown = set()
    for command in doc_commands():
        for m in re.finditer(r"""pip install -e ["']?\.\[([a-z,]+)\]""", command):
            shown |= set(m.group(1).split(","))
    assert {"cuda", "tpu", "torch", "dev"} <= shown <= set(extras)
    assert extras["cuda"] == ["jax[cuda12]"] and extras["tpu"] == ["jax[tpu]"]
    assert {"nbclient", "ipykernel", "nbformat"} <= {re.split(r"[<>=]", d)[0] for d in extras["dev"]}
    assert {"tokenizers", "ftfy"} <= {re.split(r"[<>=]", d)[0] for d in extras["text"]}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=]", d)[0] for d in project["dependencies"]}
    assert "safetensors" in core  # samjax.weights imports it at module top: every install needs it
    assert {"samjax[text]", "transformers"} <= {re.split(r"[<>=]", d)[0] for d in extras["torch"]}
    # references the tests import, installed without their declared torchvision (see pyproject)
    assert {"segment-anything-hq", "efficientsam", "clip-anytorch"} <= {re.split(r"[<>=]", d)[0]
                                                                        for d in extras["references"]}


def test_data_commands_run(tmp_path):
    """The data-pipeline commands of the README, verbatim, as processes in a tmp working directory."""
    shown = [args for c in doc_commands() if D + "test_data_commands_run" in REGISTRY[c][0]
             for args in python_commands(c)]  # the commands registered to this test
    assert [a[0] for a in shown] == ["samjax.data.synthetic", "samjax.data.sa1b"]
    env = repo_env()
    outs = []
    for args in shown:
        r = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert len(list((tmp_path / "data" / "synthetic" / "raw").glob("sa_*.jpg"))) == 16
    assert len(list((tmp_path / "data" / "synthetic" / "tfrecord").glob("*.tfrecord"))) == 2
    assert "wrote 16 synthetic SA-1B images (96x128)" in outs[0]
    assert outs[1].startswith("done: 16 images") and "0 samples/files skipped" in outs[1]


def test_bench_data_runs_small(capsys):
    from samjax.data import bench

    bench.main(["--images", "2", "--size", "64x96", "--image-size", "64", "--epochs", "1", "--batch-size", "1"])
    out = capsys.readouterr().out
    assert "data: 2 images 64x96" in out and "images/s per core" in out


def test_ten_lines_of_python_run_as_written():
    """The README's first Python block runs on a fresh machine: the shipped model, a held-out image, three calls."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Ten lines of Python"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(block.strip().splitlines()) <= 12
    scope: dict = {}
    exec(compile(block, "README.md:ten-lines", "exec"), scope)
    masks, scores, truth = scope["masks"], scope["scores"], scope["truth"]
    assert masks.shape == (3, *truth.shape[1:]) and scores.shape == (3,)
    best = masks[int(scores.argmax())]
    assert (best & truth[0]).sum() / (best | truth[0]).sum() > 0.5  # the shipped model finds the clicked object
