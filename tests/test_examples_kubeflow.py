"""The Kubeflow PyTorchJob example cannot rot: it parses, its numbers agree, and the entry
point it runs accepts its arguments."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # no stubs installed

from granite_tuner.backends.local import distributed

MANIFEST = Path(__file__).parent.parent / "examples" / "kubeflow" / "pytorchjob.yaml"
ENTRY_POINT = "granite_tuner.backends.local.distributed"


def _job() -> dict[str, Any]:
    job: dict[str, Any] = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    return job


def _torchrun(container: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """torchrun's options, and the entry point's arguments, from the container's command."""
    shell, flag, script = container["command"]
    assert (shell, flag) == ("sh", "-c")
    words = shlex.split(script)
    assert words[:4] == ["exec", "python", "-m", "torch.distributed.run"]
    split = words.index("-m", 4)
    assert words[split + 1] == ENTRY_POINT
    options = dict(word.split("=", 1) for word in words[4:split])
    return options, words[split + 2 :]


def test_the_manifest_is_a_pytorchjob_with_a_master_and_workers() -> None:
    job = _job()
    assert job["apiVersion"] == "kubeflow.org/v1"
    assert job["kind"] == "PyTorchJob"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"}
    assert replicas["Master"]["replicas"] == 1
    # Every pod runs the same thing; the operator's RANK tells them apart.
    assert replicas["Master"]["template"] == replicas["Worker"]["template"]


def test_nodes_and_processes_agree_with_the_replicas_and_gpus() -> None:
    replicas = _job()["spec"]["pytorchReplicaSpecs"]
    (container,) = replicas["Master"]["template"]["spec"]["containers"]
    assert container["name"] == "pytorch"
    options, _ = _torchrun(container)
    nodes = sum(spec["replicas"] for spec in replicas.values())
    assert int(options["--nnodes"]) == nodes
    assert int(options["--nproc-per-node"]) == container["resources"]["limits"]["nvidia.com/gpu"]
    assert options["--node-rank"] == "$RANK"
    assert options["--master-addr"] == "$MASTER_ADDR"


def test_the_entry_point_accepts_the_arguments() -> None:
    assert importlib.util.find_spec(ENTRY_POINT) is not None
    (container,) = _job()["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    _, arguments = _torchrun(container)
    parsed = distributed._parser().parse_args(arguments)
    assert parsed.training_file == Path("/data/train.jsonl")
    assert parsed.run_id is None
    assert parsed.device == "cuda"
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    for path in (parsed.training_file, parsed.parameters, parsed.home, Path(parsed.model)):
        assert any(str(path).startswith(mount + "/") for mount in mounts), path
