"""Deployment files: one device as before, and a list of replicas."""

from __future__ import annotations

import pytest

from seallm.deploy import DeploymentConfig, ModelEntry, ReplicaEntry, load_deployment

MODELS = (ModelEntry("a", "/x/a"), ModelEntry("b", "/x/b"))


def test_without_replicas_one_replica_holds_everything():
    cfg = DeploymentConfig(models=MODELS)
    assert cfg.replica_deployments() == [("0", cfg)]


def test_replicas_inherit_and_override(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("models:\n  - {name: a, path: a}\n  - {name: b, path: b}\n"
                 "kv_cache_memory: 1GiB\nmax_num_seqs: 9\nprofiles_path: /p/prof.json\n"
                 "replicas:\n  - {name: r0, models: [a], threads: 1, kv_cache_memory: 256MiB}\n"
                 "  - {models: [a, b], max_resident_models: 1}\nrouting_policy: round_robin\n")
    cfg = load_deployment(str(f))
    (n0, r0), (n1, r1) = cfg.replica_deployments()
    assert (n0, n1) == ("r0", "r1")
    assert [m.name for m in r0.models] == ["a"] and [m.name for m in r1.models] == ["a", "b"]
    assert r0.models[0].path == str(tmp_path / "a")
    assert (r0.kv_cache_memory, r0.threads, r0.max_num_seqs) == ("256MiB", 1, 9)
    assert (r1.kv_cache_memory, r1.threads, r1.max_resident_models) == ("1GiB", None, 1)
    assert (r0.profiles_path, r1.profiles_path) == ("/p/prof.r0.json", "/p/prof.r1.json")
    assert r0.replicas == () and cfg.routing_policy == "round_robin"


@pytest.mark.parametrize("replicas, match", [
    ((ReplicaEntry("r0", ("a",)),), "on no replica"),
    ((ReplicaEntry("r0", ("a", "zzz")), ReplicaEntry("r1", ("b",))), "not in models"),
    ((ReplicaEntry("r0"), ReplicaEntry("r0")), "unique"),
    ((ReplicaEntry("r0", (), kv_cache_memory="lots"),), "replica 'r0'"),
])
def test_bad_replicas_are_named(replicas, match):
    with pytest.raises(ValueError, match=match):
        DeploymentConfig(models=MODELS, replicas=replicas)


def test_bad_replica_keys_in_a_file(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("models:\n  - {name: a, path: a}\nreplicas:\n  - {name: r0, gpus: 2}\n")
    with pytest.raises(ValueError, match=r"replicas\[0\] has unknown keys \['gpus'\]"):
        load_deployment(str(f))
    f.write_text("models:\n  - {name: a, path: a}\nreplicas:\n  - {name: r0, threads: 0}\n")
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        load_deployment(str(f))
    with pytest.raises(ValueError, match="routing_policy"):
        DeploymentConfig(models=MODELS, routing_policy="random")


def test_concurrent_models_from_file_and_flag(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("models:\n  - {name: a, path: a}\nconcurrent_models: 1\n")
    assert load_deployment(str(f)).concurrent_models == 1
    assert DeploymentConfig(models=MODELS).concurrent_models == "auto"
    for bad in (0, "many", 1.5, False):
        with pytest.raises(ValueError, match="concurrent_models must be a positive integer or 'auto'"):
            DeploymentConfig(models=MODELS, concurrent_models=bad)
    from seallm.server.cli import _concurrent_models

    assert (_concurrent_models("auto"), _concurrent_models("2")) == ("auto", 2)
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        _concurrent_models("0")
