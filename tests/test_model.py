import pytest

from catsdogs.model import build_model, model_summary


def layer_kinds(model):
    kinds = []
    for layer in model.layers[1:]:
        if layer.name == "data_augmentation":
            kinds += [type(inner).__name__ for inner in layer.layers]
        else:
            kinds.append(type(layer).__name__)
    return kinds


def test_baseline_is_the_reference_architecture():
    model = build_model("baseline", 180)
    assert layer_kinds(model) == ["Rescaling"] + ["Conv2D", "MaxPooling2D"] * 4 + ["Conv2D", "Flatten", "Dense"]
    filters = [layer.filters for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert filters == [32, 64, 128, 256, 256]
    assert model.count_params() == 991_041  # the reference book's figure for this model at 180x180
    assert model.layers[-1].activation.__name__ == "sigmoid"
    assert type(model.optimizer).__name__ == "RMSprop" and model.loss == "binary_crossentropy"


def test_augmented_adds_augmentation_and_dropout():
    model = build_model("augmented", 180)
    assert layer_kinds(model) == (["RandomFlip", "RandomRotation", "RandomZoom", "Rescaling"]
                                  + ["Conv2D", "MaxPooling2D"] * 4 + ["Conv2D", "Flatten", "Dropout", "Dense"])
    assert model.count_params() == 991_041


def test_smallest_size_builds_and_smaller_fails():
    assert build_model("baseline", 78).output_shape == (None, 1)
    with pytest.raises(ValueError):
        build_model("baseline", 77)


def test_summary_is_text():
    text = model_summary(build_model("baseline", 78))
    assert "conv2d" in text.lower() and "Total params" in text
