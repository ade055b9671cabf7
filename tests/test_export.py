"""scripts/export_models.py: SavedModels that TF Serving can load and that answer like Keras."""

import numpy as np
import pytest
import tensorflow as tf

from scripts.export_models import export_model, main
from train_mnist import to_model_input

ARCHS = ("dense", "cnn")


@pytest.fixture(scope="module")
def exported(registry, tmp_path_factory):
    """Both digit models exported once, as version 1, into a temporary folder."""
    out = tmp_path_factory.mktemp("export")
    return {arch: export_model(registry.digit_model_path(arch), out) for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
def test_the_serving_signature_answers_like_the_keras_model(exported, registry, mnist_sample, arch):
    assert exported[arch].relative_to(exported[arch].parents[1]).as_posix() == f"mnist_{arch}/1"
    serve = tf.saved_model.load(str(exported[arch])).signatures["serving_default"]
    keras_model = registry.digit(arch).keras_model
    x = to_model_input(mnist_sample[0][:100], arch)
    (outputs,) = serve(tf.constant(x)).values()
    np.testing.assert_allclose(outputs.numpy(), keras_model(x, training=False).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_signature_has_the_name_and_shape_the_rest_metadata_reports(exported, client, arch):
    serve = tf.saved_model.load(str(exported[arch])).signatures["serving_default"]
    ((input_name, spec),) = serve.structured_input_signature[1].items()
    metadata = client.get(f"/v1/models/mnist_{arch}/metadata").json
    inputs = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert list(inputs) == [input_name]
    assert [int(dim["size"]) for dim in inputs[input_name]["tensor_shape"]["dim"]] == [-1, *spec.shape[1:]]
    assert list(serve.structured_outputs) == ["output_0"]


def test_an_existing_version_is_kept_unless_forced(exported, registry):
    version_dir = exported["dense"]
    with pytest.raises(FileExistsError, match="export a new --version"):
        export_model(registry.digit_model_path("dense"), version_dir.parents[1])
    marker = version_dir / "stale"
    marker.touch()
    assert export_model(registry.digit_model_path("dense"), version_dir.parents[1], force=True) == version_dir
    assert not marker.exists()


def test_the_command_exports_a_new_version_next_to_the_old(exported, capsys):
    out = exported["dense"].parents[1]
    main(["dense", "--version", "2", "--out", str(out)])
    assert sorted(p.name for p in (out / "mnist_dense").iterdir()) == ["1", "2"]
    assert "exported mnist_dense.keras to" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["resnet"], "unknown model resnet: use dense or cnn"),
    (["--version", "0"], "--version must be a positive integer"),
])
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err
