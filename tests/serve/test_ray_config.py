"""The Ray Serve deployment without a cluster: its options (Ray's batching pitfalls), the `serve deploy` config
against Ray's own schema, the builder's arguments, the CLI's option checks, and the ingress's handling of a lost
replica, back-pressure and a replica's own error."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

pytest.importorskip("ray.serve", reason="Ray Serve is the optional `ray` extra: pip install 'ganrt[ray]'")

from ganrt.cli import cli  # noqa: E402
from ganrt.errors import BackendError, ConfigError, InputError  # noqa: E402
from ganrt.serve.batcher import QueueFull, Work  # noqa: E402
from ganrt.serve.options import ServeOptions  # noqa: E402
from ganrt.serve.ray import RayOptions, build, deployment_options, parse_autoscale, serve_config  # noqa: E402

RAY_DEFAULT_MAX_ONGOING = 5


def test_replicas_admit_full_batches_of_one_image_requests_not_rays_default_of_five():
    d = deployment_options(ServeOptions(max_batch=32), RayOptions(replicas=3), bundle_max_batch=64)
    model = d["Model"]
    assert model["max_ongoing_requests"] >= 32 * 2 > RAY_DEFAULT_MAX_ONGOING  # one batch computing, one forming
    assert model["num_replicas"] == 3 and "autoscaling_config" not in model
    assert model["max_queued_requests"] == 256  # --max-queue: beyond it the ingress answers 503
    # the one ingress admits every request the replicas can hold, plus the queue
    assert d["Ingress"]["max_ongoing_requests"] >= 256 + 3 * model["max_ongoing_requests"]
    assert d["Ingress"]["num_replicas"] == 1


def test_the_batch_bound_is_the_bundles_max_batch_when_none_is_asked_and_never_above_it():
    assert deployment_options(ServeOptions(), RayOptions(), bundle_max_batch=8)["Model"]["max_ongoing_requests"] \
        == deployment_options(ServeOptions(max_batch=500), RayOptions(), bundle_max_batch=8)["Model"][
            "max_ongoing_requests"] < deployment_options(ServeOptions(), RayOptions(), bundle_max_batch=64)[
            "Model"]["max_ongoing_requests"]


def test_autoscale_and_gpus_reach_the_model_deployment():
    d = deployment_options(ServeOptions(max_batch=16), RayOptions(autoscale=(1, 4), num_cpus=2, num_gpus=0.5), 64)
    model = d["Model"]
    assert model["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16}
    assert "num_replicas" not in model
    assert model["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 0.5}
    assert d["Ingress"]["ray_actor_options"] == {"num_cpus": 0}


@pytest.mark.parametrize("text, message", [("4", "MIN:MAX"), ("a:b", "MIN:MAX"), ("3:1", "MIN <= MAX"),
                                           ("0:0", "MAX >= 1"), ("-1:2", "0 <= MIN")])
def test_bad_autoscale_is_refused_with_the_expected_form(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_autoscale(text)


def test_the_serve_deploy_config_validates_with_rays_schema_and_builds_the_application(bundle_dir):
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.utils import import_attr
    from ray.serve.schema import ServeDeploySchema

    config = serve_config(bundle_dir, ServeOptions(max_batch=16, port=8123, host="0.0.0.0"),
                          RayOptions(autoscale=(1, 3), num_gpus=1))
    text = yaml.safe_dump(config)
    schema = ServeDeploySchema.model_validate(yaml.safe_load(text))
    (application,) = schema.applications
    assert schema.http_options.port == 8123 and application.route_prefix == "/"
    deployments = {d.name: d for d in application.deployments}
    assert set(deployments) == {"Model", "Ingress"}
    assert deployments["Model"].autoscaling_config["max_replicas"] == 3
    assert deployments["Model"].ray_actor_options.num_gpus == 1
    built = call_user_app_builder_with_args_if_necessary(import_attr(application.import_path), application.args)
    assert type(built).__name__ == "Application"
    assert application.args["options"] == {"max_batch": 16, "threads": 1}
    assert application.args["ray"] == {"autoscale": [1, 3], "num_gpus": 1}


def test_the_builder_takes_rays_key_value_strings_and_refuses_unknown_keys(bundle_dir):
    assert type(build({"bundle": str(bundle_dir), "replicas": "2", "max_batch": "8", "num_cpus": "0.5",
                       "autoscale": "none"})).__name__ == "Application"
    with pytest.raises(ConfigError, match="unknown argument 'replica'"):
        build({"bundle": str(bundle_dir), "replica": "2"})
    with pytest.raises(ConfigError, match="max_batch='eight' is not a valid int"):
        build({"bundle": str(bundle_dir), "max_batch": "eight"})
    with pytest.raises(ConfigError, match="needs bundle=PATH"):
        build({"replicas": "2"})
    with pytest.raises(ConfigError, match="max_batch must be an integer >= 1"):
        build({"bundle": str(bundle_dir), "options": {"max_batch": 0}})


@pytest.mark.parametrize("args, message", [
    (["--replicas", "2"], "--replicas goes with --ray"),
    (["--num-cpus", "1", "--address", "auto"], "--num-cpus, --address go with --ray"),
    (["--ray", "--replicas", "2", "--autoscale", "1:2"], "not both"),
    (["--ray", "--autoscale", "2:1"], "MIN <= MAX"),
])
def test_ray_options_are_checked_before_any_cluster_starts(bundle_dir, args, message):
    result = CliRunner().invoke(cli, ["serve", str(bundle_dir), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_serve_config_writes_the_file_and_needs_ray(bundle_dir, tmp_path):
    out = tmp_path / "serve.yaml"
    result = CliRunner().invoke(cli, ["serve-config", str(bundle_dir), "--ray", "--replicas", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    app = yaml.safe_load(out.read_text())["applications"][0]
    assert app["import_path"] == "ganrt.serve.ray:build" and app["args"]["bundle"] == str(bundle_dir.resolve())
    assert {d["name"]: d.get("num_replicas") for d in app["deployments"]} == {"Model": 2, "Ingress": 1}
    refused = CliRunner().invoke(cli, ["serve-config", str(bundle_dir)])
    assert refused.exit_code == 2 and "pass --ray" in refused.output


# -- the ingress's side of a model call --------------------------------------------------------------------
class _Call:
    def __init__(self, outcomes):
        self.outcomes, self.calls = list(outcomes), 0

    def remote(self, work):
        self.calls += 1
        outcome = self.outcomes.pop(0)

        async def answer():
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        return answer()


class _Handle:
    def __init__(self, outcomes):
        self.generate = _Call(outcomes)


def _frontend(bundle_dir, outcomes):
    from ganrt.serve.ray_deployments import RayFrontend

    return RayFrontend(_Handle(outcomes), str(bundle_dir), ServeOptions(), {"replicas": 2})


def test_a_part_whose_replica_died_is_sent_again(bundle_dir):
    from ray.exceptions import ActorDiedError

    done = (np.zeros((2, 32, 32, 1), np.uint8), [{"queue_wait_s": 0.0}])
    front = _frontend(bundle_dir, [ActorDiedError(), done])
    assert asyncio.run(front._generate(Work(seeds=np.arange(2, dtype=np.uint64)))) is done
    assert front.model.generate.calls == 2 and front.resent == 1
    lost = _frontend(bundle_dir, [ActorDiedError()] * 3)
    with pytest.raises(BackendError, match="replica was lost at each of 3 attempts"):
        asyncio.run(lost._generate(Work(seeds=np.arange(2, dtype=np.uint64))))


def test_back_pressure_is_a_full_queue_and_a_replicas_error_keeps_its_own_type(bundle_dir):
    from ray.exceptions import RayTaskError
    from ray.serve.exceptions import BackPressureError

    full = _frontend(bundle_dir, [BackPressureError(num_queued_requests=256, max_queued_requests=256)])
    with pytest.raises(QueueFull, match="at capacity"):
        asyncio.run(full._generate(Work(seeds=np.arange(1, dtype=np.uint64))))
    wrapped = RayTaskError("generate", "Traceback ...", InputError("label 12 is out of range"))
    bad = _frontend(bundle_dir, [wrapped])
    with pytest.raises(InputError, match="^label 12 is out of range$"):
        asyncio.run(bad._generate(Work(seeds=np.arange(1, dtype=np.uint64))))


def test_a_failed_deployment_is_told_in_one_line_naming_the_replicas_error():
    from types import SimpleNamespace

    from ganrt.serve.ray import _deploy_failure

    message = ("The deployment failed to start 3 times in a row. This may be due to a problem with its constructor "
               "or initial health check failing. See controller logs for details. Error:\n"
               "ray::ServeReplica:bundle:Model.initialize_and_get_metadata() (pid=1, ip=127.0.0.1)\n"
               "  File \"/serve/ray_deployments.py\", line 63, in __init__\n    self.service.load()\n"
               "ganrt.errors.BackendUnavailable: cannot run openvino-int8 for this bundle here: it has no IR")
    app = SimpleNamespace(message="", deployments={"Model": SimpleNamespace(message=message),
                                                   "Ingress": SimpleNamespace(message="")})
    serve = SimpleNamespace(status=lambda: SimpleNamespace(applications={"bundle": app}))
    assert _deploy_failure(serve, "bundle", RuntimeError("Deploying application bundle failed")) == \
        "ganrt.errors.BackendUnavailable: cannot run openvino-int8 for this bundle here: it has no IR"
    gone = SimpleNamespace(status=lambda: (_ for _ in ()).throw(ConnectionError("no controller")))
    assert _deploy_failure(gone, "bundle", RuntimeError("Deploying application bundle failed")) == \
        "Deploying application bundle failed"
