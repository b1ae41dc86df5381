"""LoRA adapters in use: a LoRA trained for a few steps on the tiny model, registered by name,
changes ``tailorshot generate``'s hero at scale 1, leaves it pixel-identical at scale 0 (same
seed), and loads in a separate ``tailorshot worker`` process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gen_fixtures import product_image, tiny_model_dir
from PIL import Image
from sqlmodel import Session
from typer.testing import CliRunner

from api.cli import app
from data.db import init_db, make_engine
from data.models import JobStatus, Product
from genservice.backends.loras import LORA_WEIGHT_NAME, list_loras, resolve_lora
from genservice.errors import GenerationError

REPO = Path(__file__).resolve().parents[2]
SEED = 5


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rank-4 LoRA trained 3 steps (lr 0.05) on two shots of the product."""
    from genservice.training.common import LoopConfig
    from genservice.training.lora import train_lora

    root = tmp_path_factory.mktemp("lora")
    train_lora(
        model=tiny_model_dir(),
        images=[product_image(64), product_image(64, colour=(30, 90, 200))],
        prompt="a photo of sks mug",
        out=root / "brand-mug",
        cfg=LoopConfig(steps=3, lr=5e-2, progress=False, warmup_steps=0),
        work_dir=root / "work",
    )
    return root / "brand-mug"


def make_home(root: Path) -> Path:
    (root / "catalog").mkdir(parents=True)
    # Big enough for a banner box without restoration (the x4 network is slow on 2 CPUs).
    product_image(480, colour=(30, 90, 200)).save(root / "catalog" / "MUG-7.png")
    engine = make_engine(f"sqlite:///{root / 'tailorshot.db'}")
    init_db(engine)
    with Session(engine) as s:
        s.add(Product(sku="MUG-7", title="Blue mug", category="mug", image="catalog/MUG-7.png"))
        s.commit()
    engine.dispose()
    return root


def env_for(home: Path, loras: dict[str, float] | None = None) -> dict[str, str]:
    env = {
        "TAILORSHOT_HOME": str(home),
        "TAILORSHOT_GENERATION__MODEL": str(tiny_model_dir()),
        "TAILORSHOT_GENERATION__NUM_INFERENCE_STEPS": "2",
        "TAILORSHOT_GENERATION__DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }
    if loras is not None:
        env["TAILORSHOT_GENERATION__LORAS"] = json.dumps(loras)
    return env


def generate(home: Path, out: Path, loras: dict[str, float] | None) -> dict[str, Any]:
    args = ["generate", "--product", "MUG-7", "--placement", "banner", "--out", str(out)]
    args += ["--terms", "studio, warm light", "--seed", str(SEED), "--json"]
    res = CliRunner().invoke(app, args, env=env_for(home, loras))
    assert res.exit_code == 0, res.output
    summary: dict[str, Any] = json.loads(res.output[res.output.index("{") :])
    summary["pixels"] = np.asarray(Image.open(out).convert("RGB"))
    return summary


@pytest.fixture(scope="module")
def runs(lora_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``generate`` without a LoRA, with ``brand`` at scale 1 and at scale 0, each in its own
    home (so no result-cache hit can hide a difference)."""
    out: dict[str, Any] = {}
    for label, loras in (("none", None), ("one", {"brand": 1.0}), ("zero", {"brand": 0.0})):
        home = make_home(tmp_path_factory.mktemp(f"home-{label}"))
        res = CliRunner().invoke(
            app, ["loras", "add", "brand", str(lora_dir), "--copy"], env=env_for(home)
        )
        assert res.exit_code == 0, res.output
        out[label] = generate(home, home / "hero.png", loras)
    return out


def test_lora_changes_generate_at_scale_one_and_not_at_zero(runs: dict[str, Any]) -> None:
    none, one, zero = runs["none"]["pixels"], runs["one"]["pixels"], runs["zero"]["pixels"]
    assert none.shape == one.shape == zero.shape
    diff = np.abs(one.astype(int) - none.astype(int))
    # The scene changes (the product itself is pasted bit-exactly in every run).
    assert (diff.max(axis=-1) > 0).mean() > 0.05, diff.max()
    np.testing.assert_array_equal(zero, none)
    # The adapters are part of the model a brief names: no stale cached hero when they change.
    hashes = {runs[k]["brief_hash"] for k in runs}
    assert len(hashes) == 3


def test_lora_loads_in_a_separate_worker_process(
    runs: dict[str, Any], lora_dir: Path, tmp_path: Path
) -> None:
    """A ``tailorshot worker --once`` subprocess with ``generation.loras`` renders the same
    hero as ``generate`` with the adapter in-process (same brief, same bytes)."""
    from data.files import under_home
    from genservice.brief import CreativeBrief, Placement, ProductRef, file_sha256, parse_terms
    from genservice.config import GenerationConfig
    from genservice.jobs import JobQueue

    home = make_home(tmp_path / "worker-home")
    (home / "models" / "loras").mkdir(parents=True)
    shutil.copytree(lora_dir, home / "models" / "loras" / "brand")
    config = GenerationConfig(model=str(tiny_model_dir()), loras={"brand": 1.0})
    image = "catalog/MUG-7.png"
    brief = CreativeBrief(
        product=ProductRef(id="1", title="Blue mug", image=image, category="mug"),
        placement=Placement.preset("banner"),
        style_terms=parse_terms("studio, warm light"),
        seed=SEED,
        model_id=config.model_identity,
        content_hashes=((image, file_sha256(str(under_home(image, home)))),),
    )
    assert brief.brief_hash == runs["one"]["brief_hash"]
    engine = make_engine(f"sqlite:///{home / 'tailorshot.db'}")
    job_id = JobQueue.from_config(engine, config).submit_brief(brief)
    env = {**os.environ, **env_for(home, {"brand": 1.0}), "OMP_NUM_THREADS": "1"}
    env.pop("TAILORSHOT_DATABASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", "worker", "--once"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lora brand loaded" in proc.stderr
    job = JobQueue.from_config(engine, config).get(job_id)
    engine.dispose()
    assert job is not None and job.status == JobStatus.succeeded, job
    assert job.result_key is not None
    got = np.asarray(
        Image.open(home / "images" / job.result_key[:2] / job.result_key).convert("RGB")
    ).astype(int)
    # Same adapter, same brief: the worker's hero is the in-process one (up to the last bit
    # of float sums that another thread count may order differently), not the plain one.
    to_one = np.abs(got - runs["one"]["pixels"]).mean()
    to_none = np.abs(got - runs["none"]["pixels"]).mean()
    assert to_one < 0.05 and to_none > 20 * max(to_one, 0.01), (to_one, to_none)


def test_registry_resolves_names_and_paths(lora_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    env = env_for(tmp_path)
    assert runner.invoke(app, ["loras", "add", "reg", str(lora_dir)], env=env).exit_code == 0
    assert resolve_lora("reg", tmp_path) == lora_dir.resolve()
    assert resolve_lora(str(lora_dir), tmp_path) == lora_dir.resolve()  # a path works as is
    res = runner.invoke(app, ["loras", "add", "reg", str(lora_dir)], env=env)
    assert res.exit_code == 2 and "already known" in res.output
    res = runner.invoke(app, ["loras", "add", "bad", str(tmp_path)], env=env)
    assert res.exit_code == 2 and LORA_WEIGHT_NAME in res.output
    assert [i.name for i in list_loras(tmp_path)] == ["reg"]
    assert runner.invoke(app, ["loras", "remove", "reg"], env=env).exit_code == 0
    assert lora_dir.is_dir() and list_loras(tmp_path) == []  # registered folders stay
    with pytest.raises(GenerationError, match="no adapter 'reg'"):
        resolve_lora("reg", tmp_path)
