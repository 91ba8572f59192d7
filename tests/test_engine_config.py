"""Configs: the schema, overrides, unknown-key errors, and every shipped config builds its model and data."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

import typing

from integral_pose.engine.config import _RANGES, Config, ConfigError, config_from_stored, load_config, schema_markdown
from integral_pose.engine.typed_config import typed_keys
from integral_pose.models import list_models
from integral_pose.ops.readouts import READOUT_NAMES
from integral_pose.engine.data import build_dataset, dataset_skeleton
from integral_pose.engine.module import build_model_from_config
from integral_pose.skeletons import get_skeleton

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
SHARED = Path(__file__).parents[2] / "shared" / "data"

# Real-data configs pointed at the small fixtures in ../shared/data.
FIXTURES = {
    "coco_res50_256x192": [f"data.root={SHARED / 'coco'}", "data.train_ann=test_coco.json", "data.val_ann=test_coco.json",
                           "data.train_images=.", "data.val_images=."],
    "mpii_res50_256x256": [f"data.root={SHARED / 'mpii'}", "data.train_ann=test_mpii.json", "data.val_ann=test_mpii.json",
                           "data.train_images=.", "data.val_images=."],
    "h36m_mpii_res50_256x256": [f"data.root={SHARED / 'h36m_frames'}", "data.train_ann=h36m_coco.json",
                                "data.val_ann=h36m_coco.json", "data.train_images=.", "data.val_images=.",
                                f"data.mpii_root={SHARED / 'mpii'}", "data.mpii_ann=test_mpii.json"],
}
SMALL_SYNTHETIC = ["data.synthetic_train=8", "data.synthetic_val=4"]


def test_shipped_configs_present():
    names = {p.stem for p in CONFIGS}
    assert {"synthetic_2d", "synthetic_3d", "coco_res50_256x192", "mpii_res50_256x256", "h36m_mpii_res50_256x256"} <= names


# The demo's choices, as the built-in defaults held them before the library got neutral ones: the
# demo's table must keep reproducing, so configs/synthetic_2d.yaml has to carry every one of them.
DEMO_SETTINGS = {
    "name": "synthetic_2d", "model.name": "tiny", "data.dataset": "synthetic", "data.input_size": [64, 64],
    "data.synthetic_train": 20000, "data.synthetic_val": 500, "data.synthetic_image_size": 80,
    "data.synthetic_pose_amplitude": [0.25, 0.6], "data.synthetic_clutter": 0, "data.heatmap_sigma": 0.75,
    "data.rotation": 0.0, "data.scale": 0.1, "data.batch_size": 32, "data.num_workers": 0,
    "train.mode": "integral", "train.readout": "integral", "train.js_weight": 1.0, "train.regularizer": "js",
    "train.regularizer_sigma": 0.5, "train.max_epochs": 32, "train.max_time_s": 420.0, "train.lr": 0.004,
    "train.lr_steps": [24, 28], "train.warmup_steps": 100, "train.precision": "auto",
    "eval.flip_test": True, "eval.readout": "integral_local",
}


def test_demo_config_carries_every_demo_choice():
    cfg = flatten_cfg(load_config(REPO / "configs" / "synthetic_2d.yaml"))
    assert {k: cfg[k] for k in DEMO_SETTINGS} == DEMO_SETTINGS


def test_library_defaults_are_neutral():
    """No time cap, the papers' optimiser settings and plain L1 through the plain soft-argmax."""
    t = Config().train
    assert t.max_time_s is None and t.lr == 1e-3 and t.lr_steps == [90, 120] and t.max_epochs == 140
    assert t.js_weight == 0 and t.readout == "integral" and t.threads is None
    assert Config().eval.readout is None and Config().train.regularizer_sigma is None


def flatten_cfg(cfg: Config) -> dict:
    from integral_pose.engine.typed_config import flatten, to_dict
    return flatten(to_dict(cfg))


def test_old_stored_configs_still_load():
    """A run folder or checkpoint of an earlier version: renamed keys and readout names translated,
    the demo's keys dropped."""
    old = {"train": {"integral_readout": "debiased", "compare_modes": ["heatmap"], "parallel_compare": True,
                     "keep_freed_memory": True, "threads": "auto", "lr": 0.004},
           "eval": {"integral_decoder": "integral_local", "decoders": ["argmax", "dark"]}}
    cfg = config_from_stored(old)
    assert cfg.train.readout == "integral_debiased" and cfg.train.threads is None and cfg.train.lr == 0.004
    # eval.decoders listed a heatmap model's readouts: an integral run reads its own family
    assert cfg.eval.readout == "integral_local" and cfg.eval.readouts is None
    heatmap = config_from_stored({"train": {"mode": "heatmap"}, "eval": old["eval"]})
    assert heatmap.eval.readouts == ["argmax", "dark"] and heatmap.eval.readout is None  # integral_decoder: integral only
    heatmap.validate()


def test_renamed_and_demo_keys_in_a_user_file_say_where_they_went(tmp_path):
    p = tmp_path / "old.yaml"
    p.write_text("eval:\n  integral_decoder: integral\n")
    with pytest.raises(ConfigError, match=r"'eval\.integral_decoder' in .*old\.yaml is now 'eval\.readout'"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"'train\.compare_modes' .* belongs to the demo"):
        load_config(None, ["train.compare_modes=[heatmap]"])


def test_relative_paths_in_a_config_file_start_at_its_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "c.yaml"
    p.write_text("data:\n  root: ../data\n  skeleton: own.yaml\nmodel:\n  pretrained: /abs/w.pth\n")
    cfg = load_config(p, ["data.mpii_root=here"])
    assert cfg.data.root == str(tmp_path / "sub" / ".." / "data")
    assert cfg.data.skeleton == str(tmp_path / "sub" / "own.yaml")
    assert cfg.model.pretrained == "/abs/w.pth" and cfg.data.mpii_root == "here"  # absolute and --set paths as given
    q = tmp_path / "builtin.yaml"
    q.write_text("data:\n  skeleton: coco17\n")
    assert load_config(q).data.skeleton == "coco17"  # a built-in skeleton's name is not a path


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_model_and_data(path):
    overrides = SMALL_SYNTHETIC if path.stem.startswith("synthetic") else FIXTURES.get(path.stem)
    if overrides is None:
        pytest.fail(f"no fixture overrides for config {path.name}: add them to FIXTURES")
    if not path.stem.startswith("synthetic") and not SHARED.is_dir():
        pytest.skip(f"{SHARED} (real-data fixtures) is absent")
    cfg = load_config(path, overrides)
    k = get_skeleton(dataset_skeleton(cfg)).num_joints
    model = build_model_from_config(cfg, k)
    w, h = cfg.data.input_size
    for split in ("train", "val"):
        ds = build_dataset(cfg, split)
        assert len(ds) > 0
        batch = default_collate([ds[i] for i in range(min(2, len(ds)))])
        assert batch["image"].shape[1:] == (3, h, w)
        d = 3 if cfg.model.depth_bins else 2
        assert batch["target"].shape[1:] == (k, d)
    hw = model.heatmap_size((w, h))
    assert (batch["target"][..., 0] <= hw[0]).all()  # targets are in heatmap cells, not input pixels
    if path.stem.startswith("synthetic"):  # a forward pass of the small models
        with torch.no_grad():
            out = model.eval()(batch["image"])
        assert out.shape[1] == k and out.shape[-2:] == (hw[1], hw[0])


@pytest.mark.parametrize("name", ["coco_res50_256x192", "mpii_res50_256x256", "h36m_mpii_res50_256x256"])
def test_missing_dataset_path_names_path_and_source(name, tmp_path):
    cfg = load_config(REPO / "configs" / f"{name}.yaml", [f"data.root={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError, match=r"does not exist; .*(https?://|download|obtain)") as e:
        build_dataset(cfg, "train")
    assert "nowhere" in str(e.value)


def test_unknown_key_names_closest():
    with pytest.raises(ConfigError, match=r"'train\.lrr'.*did you mean 'train\.lr'"):
        load_config(None, ["train.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"'data\.batchsize'.*'data\.batch_size'"):
        load_config(None, ["data.batchsize=3"])


def test_unknown_key_in_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  nmae: resnet18\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'model\.name'"):
        load_config(p)


def test_overrides_are_typed_and_validated():
    cfg = load_config(None, ["train.lr=5e-4", "train.lr_steps=[3, 4]", "model.depth_bins=8", "eval.flip_test=false",
                             "model.pretrained=null", "train.mode=heatmap"])
    assert cfg.train.lr == 5e-4 and cfg.train.lr_steps == [3, 4]
    assert cfg.model.depth_bins == 8 and cfg.eval.flip_test is False and cfg.train.mode == "heatmap"
    with pytest.raises(ConfigError, match="train.mode"):
        load_config(None, ["train.mode=integrl"])
    with pytest.raises(ConfigError, match="multiples of 32"):
        load_config(None, ["data.input_size=[60, 64]"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.lr"])


_TYPES = {k: tp for k, (tp, _) in typed_keys(Config).items()}


@pytest.mark.parametrize("key", sorted(_RANGES))
def test_numeric_range_and_type_name_key_and_value(key):
    low, inclusive = _RANGES[key]
    args = typing.get_args(_TYPES[key]) or (_TYPES[key],)
    integer, nullable = int in args, type(None) in args
    below = low - 1 if inclusive else low  # the first value outside the range
    shown = below if integer else float(below)  # a number key reads 0 as 0.0
    with pytest.raises(ConfigError, match=re.escape(f"{key} = {shown!r}: expected")):
        load_config(None, [f"{key}={below}"])
    with pytest.raises(ConfigError, match=re.escape(f"{key} = 'abc': expected")):
        load_config(None, [f"{key}=abc"])
    load_config(None, [f"{key}={low if inclusive else low + 1}"])  # the bound itself (or just inside) is valid
    if integer:
        with pytest.raises(ConfigError, match=re.escape(f"{key} = {low + 1.5!r}: expected an integer")):
            load_config(None, [f"{key}={low + 1.5}"])
    if nullable:
        assert load_config(None, [f"{key}=null"])  # null is allowed
    else:
        with pytest.raises(ConfigError, match=re.escape(f"{key} = None: expected")):
            load_config(None, [f"{key}=null"])


def test_names_come_from_their_owners():
    for name in list_models():
        assert load_config(None, [f"model.name={name}"]).model.name == name
    with pytest.raises(ConfigError, match=r"model\.name = 'resnet19': unknown model; did you mean 'resnet18'\?"):
        load_config(None, ["model.name=resnet19"])
    logits = [n for n in READOUT_NAMES if n.startswith("integral")]
    assert load_config(None, [f"eval.readouts=[{', '.join(logits)}]"]).eval.readouts == logits
    scores = [n for n in READOUT_NAMES if not n.startswith("integral")]
    assert load_config(None, ["train.mode=heatmap", f"eval.readouts=[{', '.join(scores)}]"]).eval.readouts == scores
    with pytest.raises(ConfigError, match=r"eval\.readouts entry 'dark' with train\.mode = 'integral'"):
        load_config(None, ["eval.readouts=[dark]"])
    with pytest.raises(ConfigError, match=r"eval\.readouts entry 'argmx'.*did you mean 'argmax'\?"):
        load_config(None, ["eval.readouts=[argmx]"])
    with pytest.raises(ConfigError, match=r"eval\.readout = 'dark' with train\.mode = 'integral'"):
        load_config(None, ["eval.readout=dark"])


def test_yaml_numbers_and_booleans():
    # YAML 1.1 reads 2e4 as text: an integer key reads it as the integer it spells, a float key as a float
    cfg = load_config(None, ["data.synthetic_train=2e4", "train.lr=1e-3"])
    assert cfg.data.synthetic_train == 20000 and isinstance(cfg.data.synthetic_train, int)
    assert cfg.train.lr == 1e-3
    with pytest.raises(ConfigError, match=r"data\.flip = 3: expected true or false"):
        load_config(None, ["data.flip=3"])
    with pytest.raises(ConfigError, match=r"data\.batch_size = True"):  # YAML's true is an int in Python
        load_config(None, ["data.batch_size=true"])
    with pytest.raises(ConfigError, match=r"train\.lr_steps\[1\] = 'x': expected an integer"):
        load_config(None, ["train.lr_steps=[6, x]"])


def test_yaml_syntax_error_is_one_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  lr: [0.1\n  mode: integral\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "\n" not in str(e.value) and "bad.yaml" in str(e.value) and "line 3" in str(e.value)


def test_every_key_is_documented():
    docs = (REPO / "docs" / "configs.md").read_text()
    for key, (_, f) in typed_keys(Config).items():
        assert f.metadata.get("help", "").strip(), key
        assert f"`{key}`" in docs, f"{key} missing from docs/configs.md (regenerate from schema_markdown())"
    assert schema_markdown() in docs


def test_upscale_sets_the_map_size_everywhere():
    """model.upscale reaches the model and the data pipeline's grid alike (targets, evaluation)."""
    from integral_pose.engine.data import heatmap_size
    from integral_pose.engine.module import build_model_from_config

    cfg = load_config(None, ["model.upscale=2"])
    assert heatmap_size(cfg) == (32, 32)
    assert build_model_from_config(cfg, 17)(torch.rand(1, 3, 64, 64)).shape[-2:] == (32, 32)
    with pytest.raises(ConfigError, match=r"model\.upscale = 3: expected one of 1, 2, 4"):
        load_config(None, ["model.upscale=3"])
    # the head's total upsampling is checked where the config is read, not as the model's traceback
    with pytest.raises(ConfigError, match=r"model\.num_deconv = 4 with model\.upscale = 2: the tiny head would upsample past"):
        load_config(None, ["model.num_deconv=4", "model.upscale=2"])
    with pytest.raises(ConfigError, match=r"model\.num_deconv = 5 with model\.upscale = 1"):
        load_config(None, ["model.num_deconv=5"])
    assert load_config(None, ["model.num_deconv=3", "model.upscale=2"]).model.upscale == 2  # stride 1
