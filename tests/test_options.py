"""Invariants of the shipped option files: plain, hand-maintained, commented YAML (nothing
generates them). Each file parses, builds the network of its variant and scale, agrees with
its scale everywhere, and the paper-recipe files hold the paper's recipe."""

import re
from pathlib import Path

import pytest
import yaml

from esc_arch import PRESETS, build_preset, describe, preset_config

ROOT = Path(__file__).resolve().parent.parent
ALL_FILES = sorted((ROOT / "options").glob("*.yml"))
#: The arbitrary-scale network's files (no fixed scale in their names): test_lte_files below.
LTE_FILES = [p for p in ALL_FILES if "_LTE" in p.name]
OPTION_FILES = [p for p in ALL_FILES if p not in LTE_FILES]
FILE_NAME = re.compile(
    r"(?P<kind>train|test)_(?P<stem>ESC(?:_light|_FP|_XL|_Real_XL|_Real|_RIB)?)_x(?P<scale>\d)(?P<tag>_\w+)?\.yml"
)
VARIANTS = {
    "ESC": "ESC",
    "ESC_light": "ESC-light",
    "ESC_FP": "ESC-FP",
    "ESC_XL": "ESC-XL",
    "ESC_Real": "ESC-Real",
    "ESC_Real_XL": "ESC-Real-XL",
    "ESC_RIB": "ESC-RIB",
}
#: Files whose network is their preset's with the FlashBias layout of this rank.
FLASHBIAS = {"train_ESC_x2_FB.yml": 48, "test_ESC_x2_FB.yml": 48}
PAPER_STEMS = ("ESC", "ESC_light", "ESC_FP", "ESC_XL")  # the paper's classic-SR recipe, x2/x3/x4
PAPER_FILES = [f"train_{stem}_x{scale}.yml" for stem in PAPER_STEMS for scale in (2, 3, 4)]
BENCHMARKS = ["Set5", "Set14", "B100", "Urban100", "Manga109"]
SECTIONS = ("datasets", "network_g", "path", "train", "val", "logger", "dist_params")


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "options" / name).read_text())


def identity(path: Path) -> tuple[str, str, int]:
    """(kind, variant, scale) from the file name, e.g. ("test", "ESC-light", 2)."""
    match = FILE_NAME.fullmatch(path.name)
    assert match, f"{path.name}: not named {{train|test}}_{{variant}}_x{{scale}}[_tag].yml"
    return match["kind"], VARIANTS[match["stem"]], int(match["scale"])


def preset_keywords(variant: str, scale: int, flashbias_rank: int | None = None) -> dict:
    return preset_config(variant, scale).replace(flashbias_rank=flashbias_rank).as_dict()


def paired_sets(opt: dict) -> list[dict]:
    return [d for d in opt["datasets"].values() if d["type"] == "PairedImageDataset"]


def is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def has_inline_comment(line: str) -> bool:
    return re.search(r"\s#\s", re.sub(r"'[^']*'|\"[^\"]*\"", "''", line)) is not None


def missing_comments(text: str) -> list[str]:
    """What a hand-readable option file lacks: a header comment, a comment on each top-level
    section, inline comments on the non-obvious values."""
    lines = text.splitlines()
    missing = [] if lines and is_comment(lines[0]) else ["a header comment"]
    for at, line in enumerate(lines):
        key = line.split(":", 1)[0]
        if key in SECTIONS and not line.startswith(" "):
            before = [x for x in lines[:at] if x.strip()]
            if not (before and is_comment(before[-1])) and not has_inline_comment(line):
                missing.append(f"a comment on {key}")
    if sum(has_inline_comment(line) for line in lines if not is_comment(line)) < 5:
        missing.append("inline comments on the values")
    return missing


def test_every_variant_and_scale_is_shipped():
    names = {p.name for p in OPTION_FILES}
    for stem in PAPER_STEMS:
        for scale in (2, 3, 4):
            assert {f"train_{stem}_x{scale}.yml", f"test_{stem}_x{scale}.yml"} <= names
    assert {"train_ESC_Real_x4_MSE.yml", "train_ESC_Real_x4_GAN.yml", "test_ESC_Real_x4.yml"} <= names
    assert "train_ESC_light_x2_demo.yml" in names  # read by esc demo
    for path in OPTION_FILES:
        identity(path)  # every file says its variant and scale in its name


def test_nothing_generates_the_option_files():
    for path in ALL_FILES:
        assert "generated" not in path.read_text().lower(), path.name


@pytest.mark.parametrize("path", OPTION_FILES, ids=lambda p: p.name)
def test_option_file_parses_as_basicsr_reads_it(path):
    from basicsr.utils.options import ordered_yaml

    opt = yaml.safe_load(path.read_text())
    assert isinstance(opt, dict)
    assert yaml.load(path.read_text(), Loader=ordered_yaml()[0]) == opt  # BasicSR's loader reads the same
    assert {"name", "model_type", "scale", "num_gpu", "datasets", "network_g", "path"} <= set(opt)
    kind, _, _ = identity(path)
    assert ("train" in opt) == (kind == "train")
    assert kind == "train" or "val" in opt  # BasicSR's test reads val: save_img and metrics
    for dataset in opt["datasets"].values():
        for key in ("dataroot_gt", "dataroot_lq", "meta_info"):
            assert key not in dataset or not Path(dataset[key]).is_absolute(), f"{key} must be relative"


@pytest.mark.parametrize("path", OPTION_FILES, ids=lambda p: p.name)
def test_network_matches_the_preset_of_its_variant_and_scale(path):
    from basicsr.archs import build_network

    _, variant, scale = identity(path)
    network_g = load(path.name)["network_g"]
    rank = FLASHBIAS.get(path.name)
    preset = preset_keywords(variant, scale, rank)
    assert network_g["attn_type"] == "auto"
    for key, value in network_g.items():
        if key not in ("type", "attn_type"):
            assert key in preset and value == preset[key], (
                f"network_g.{key}: {value!r}, {variant} has {preset.get(key)!r}"
            )
    # keywords the file leaves out take the class defaults: the built networks must be the same
    net, reference = build_network(dict(network_g)), build_preset(variant, scale)
    assert network_g["type"] == type(net).__name__ == type(reference).__name__
    if rank is not None:  # the FlashBias layout: each table becomes two (heads, N, rank) factors
        assert net.config == reference.config.replace(flashbias_rank=rank)
        return
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert sum(p.numel() for p in net.parameters()) == PRESETS[variant].params[scale]


@pytest.mark.parametrize("path", OPTION_FILES, ids=lambda p: p.name)
def test_scale_keys_agree(path):
    _, _, scale = identity(path)
    opt = load(path.name)
    assert opt["scale"] == scale == opt["network_g"]["upscaling_factor"]
    for dataset in paired_sets(opt):
        assert re.findall(r"X(\d)", dataset["dataroot_lq"]) == [str(scale)], dataset["dataroot_lq"]
        if "filename_tmpl" in dataset:
            assert dataset["filename_tmpl"] == f"{{}}x{scale}"
    assert all(m["crop_border"] == scale for m in opt.get("val", {}).get("metrics", {}).values())
    # HR patch: the paper's LR patch of 64x64; the CPU-budget runs' one window
    train_set = opt["datasets"].get("train")
    if train_set is not None:
        window = opt["network_g"]["window_size"]
        lr_patch = window if path.stem.endswith(("_small", "_demo")) else 96 if path.stem.endswith("_stage2") else 64
        assert train_set["gt_size"] == lr_patch * scale
    if "gt_size" in opt:  # Real-ESRGAN's top-level patch size
        assert opt["gt_size"] == train_set["gt_size"] == 64 * scale


@pytest.mark.parametrize("name", PAPER_FILES)
def test_the_paper_recipe(name):
    _, variant, scale = identity(Path(name))
    opt = load(name)
    train = opt["train"]
    assert opt["model_type"] == "ESCModel"
    assert train["optim_g"] == {"type": "AdamW", "lr": 5e-4, "weight_decay": 0, "betas": [0.9, 0.9]}
    assert train["scheduler"] == {
        "type": "MultiStepLR",
        "milestones": [250_000, 400_000, 450_000, 475_000, 490_000],
        "gamma": 0.5,
    }
    assert train["total_iter"] == 500_000 and train["warmup_iter"] == 20_000
    assert train["ema_decay"] == 0.999
    assert [k for k in train if k.endswith("_opt")] == ["pixel_opt"]
    assert train["pixel_opt"] == {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"}
    assert train["mixed_precision"] is None  # fp32
    data = opt["datasets"]["train"]
    assert data["batch_size_per_gpu"] == 16 and data["gt_size"] == 64 * scale
    assert data["use_hflip"] is True and data["use_rot"] is True
    source = "DF2K" if variant == "ESC-XL" else "DIV2K"  # the paper: ESC-XL on DF2K, the others on DIV2K
    assert data["name"] == source and data["dataroot_gt"] == f"datasets/{source}/{source}_train_HR_sub.lmdb"
    assert data["dataroot_lq"] == f"datasets/{source}/{source}_train_LR_bicubic_X{scale}_sub.lmdb"
    assert [m["test_y_channel"] for m in opt["val"]["metrics"].values()] == [True, True]


@pytest.mark.parametrize("name", PAPER_FILES)
def test_x3_and_x4_start_from_the_x2_run(name):
    opt = load(name)
    path = opt["path"]
    assert path["param_key_g"] == "params_ema" and path["strict_load_g"] is True
    if opt["scale"] == 2:
        assert path["pretrain_network_g"] is None
    else:
        x2 = load(re.sub(r"_x\d\.yml$", "_x2.yml", name))
        assert path["pretrain_network_g"] == f"experiments/{x2['name']}/models/net_g_latest.pth"


def test_the_real_recipe_runs_in_two_stages():
    mse, gan = load("train_ESC_Real_x4_MSE.yml"), load("train_ESC_Real_x4_GAN.yml")
    assert (mse["model_type"], gan["model_type"]) == ("ESCRealESRNetModel", "ESCRealESRGANModel")
    assert mse["path"]["pretrain_network_g"] is None
    assert gan["path"]["pretrain_network_g"] == f"experiments/{mse['name']}/models/net_g_latest.pth"
    assert set(gan["train"]) >= {"pixel_opt", "perceptual_opt", "gan_opt", "optim_d"} and "network_d" in gan


def test_the_authors_later_recipes():
    """FlashBias fine-tuning from the x2 table weights at a tenth of the rate, DFLIP data,
    ESC-XL in two stages (300k at 64 px LR, then 250k at 96 from stage 1), ESC-Real-XL."""
    fb = load("train_ESC_x2_FB.yml")
    assert fb["path"]["pretrain_network_g"] == "experiments/pretrained_models/ESC_x2.pth"
    assert fb["path"]["strict_load_g"] is True and fb["train"]["optim_g"]["lr"] == 5e-5
    dflip = load("train_ESC_x2_DFLIP.yml")["datasets"]["train"]
    assert dflip["dataroot_gt"] == "datasets/DFLIP/DFLIP_train_HR_sub.lmdb"
    one, two = load("train_ESC_XL_x2_stage1.yml"), load("train_ESC_XL_x2_stage2.yml")
    assert (one["train"]["total_iter"], two["train"]["total_iter"]) == (300_000, 250_000)
    assert (one["datasets"]["train"]["gt_size"], two["datasets"]["train"]["gt_size"]) == (128, 192)
    assert two["path"]["pretrain_network_g"] == f"experiments/{one['name']}/models/net_g_latest.pth"
    mse, gan = load("train_ESC_Real_XL_x4_MSE.yml"), load("train_ESC_Real_XL_x4_GAN.yml")
    assert gan["path"]["pretrain_network_g"] == f"experiments/{mse['name']}/models/net_g_latest.pth"


def test_the_esc_rib_recipe_is_the_dflip_recipe_with_its_network():
    rib, esc = load("train_ESC_RIB_x2.yml"), load("train_ESC_x2_DFLIP.yml")
    assert rib["train"] == esc["train"] and rib["datasets"] == esc["datasets"]
    assert rib["network_g"]["type"] == "ESCRIB" and rib["network_g"]["window_size"] == 64
    small, light = load("train_ESC_RIB_x2_small.yml"), load("train_ESC_light_x2_small.yml")
    assert small["datasets"]["val_1"] == light["datasets"]["val_1"] and small["train"]["optim_g"] == light["train"][
        "optim_g"]  # fmt: skip
    assert small["datasets"]["train"]["batch_size_per_gpu"] == light["datasets"]["train"]["batch_size_per_gpu"]


def test_the_small_set_runs():
    for name in ("train_ESC_light_x2_small.yml", "train_ESC_light_x4_small.yml", "train_ESC_RIB_x2_small.yml"):
        opt = load(name)
        assert [d["name"] for d in paired_sets(opt)[1:]] == ["Set5", "Set14"]
        train = opt["train"]
        assert train["scheduler"]["periods"] == [train["total_iter"]]  # one cosine over the whole run
        val_freq = opt["val"]["val_freq"]
        assert train["total_iter"] % val_freq == 0  # the last iteration is validated (the released weights)
        assert train["ema_decay"] ** train["total_iter"] < 0.01  # under 1% of the initial weights left in the EMA


@pytest.mark.parametrize("path", [p for p in OPTION_FILES if p.name.startswith("test_")], ids=lambda p: p.name)
def test_test_files_expect_the_release_weights(path):
    _, variant, scale = identity(path)
    opt, text = load(path.name), path.read_text()
    assert opt["model_type"] == "ESCModel" and opt["val"]["save_img"] is True
    release = f"{variant}-FB{FLASHBIAS[path.name]}" if path.name in FLASHBIAS else variant
    assert opt["path"]["pretrain_network_g"] == f"experiments/pretrained_models/{release}_x{scale}.pth"
    assert opt["path"]["param_key_g"] == "params_ema"
    assert "esc export" in text  # the comment says where the file comes from
    if variant == "ESC-Real":  # real photos without ground truth
        assert list(opt["val"]["metrics"]) == ["niqe"]
        return
    assert [d["name"] for d in opt["datasets"].values()] == BENCHMARKS
    for d in opt["datasets"].values():
        assert (d["dataroot_gt"], d["dataroot_lq"]) == (
            f"datasets/{d['name']}/HR",
            f"datasets/{d['name']}/LR_bicubic/X{scale}",
        )
    assert list(opt["val"]["metrics"]) == ["psnr", "ssim"]
    assert all(m["test_y_channel"] is True for m in opt["val"]["metrics"].values())
    assert "skips a set whose folders are missing" in text


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_option_file_is_commented(path):
    assert missing_comments(path.read_text()) == []


def test_a_file_without_comments_fails_the_comment_check():
    text = (ROOT / "options" / "train_ESC_x2.yml").read_text()
    bare = "\n".join(re.sub(r"\s+#.*$", "", line) for line in text.splitlines() if not is_comment(line))
    assert yaml.safe_load(bare) == yaml.safe_load(text)  # same options, no comments
    assert set(missing_comments(bare)) >= {
        "a header comment",
        "a comment on network_g",
        "inline comments on the values",
    }


def test_lte_files():
    """ESC-LTE: the authors' recipe on DIV2K (LIIF's data, batch 32, Adam 2e-4, 1000 epochs of
    500 iterations), the test files at the literature's scales, the small-set run."""
    from basicsr.archs import build_network

    assert [p.name for p in LTE_FILES] == [
        "test_ESC_LTE.yml", "test_ESC_LTE_DIV2K.yml", "train_ESC_LTE.yml", "train_ESC_LTE_small.yml"
    ]  # fmt: skip
    train = load("train_ESC_LTE.yml")
    assert train["model_type"] == "ESCLTEModel" and "scale" not in train
    net = build_network(dict(train["network_g"]))
    assert type(net).__name__ == "ESCLTE" and describe(net).variant == "ESC-LTE"
    assert sum(p.numel() for p in net.parameters()) == 1_433_631
    data = train["datasets"]["train"]
    assert (data["type"], data["inp_size"], data["scale_min"], data["scale_max"], data["sample_q"]) == (
        "ArbitraryScaleDataset", 64, 1, 4, 2304
    )  # fmt: skip
    assert data["batch_size_per_gpu"] == 32 and data["dataroot_gt"] == "datasets/DIV2K/DIV2K_train_HR_sub.lmdb"
    recipe = train["train"]
    assert recipe["optim_g"]["type"] == "Adam" and recipe["optim_g"]["lr"] == 2e-4
    assert recipe["total_iter"] == 1000 * 16_000 // 32  # 1000 epochs of 800 images x 20, batch 32
    assert recipe["scheduler"]["milestones"] == [e * 500 for e in (500, 800, 900, 950)]
    assert recipe["pixel_opt"]["type"] == "L1Loss" and recipe["ema_decay"] > 0
    for name in ("train_ESC_LTE.yml", "train_ESC_LTE_small.yml", "test_ESC_LTE.yml", "test_ESC_LTE_DIV2K.yml"):
        opt = load(name)
        sets = [d for phase, d in opt["datasets"].items() if phase != "train"]
        assert sets and all(d["type"] == "ArbitraryScaleDataset" and d["test_scale"] > 0 for d in sets)
        assert list(opt["val"]["metrics"].values()) == [{"type": "calculate_psnr_liif"}]
    for name, protocol, sets in (("test_ESC_LTE.yml", "benchmark", ["Set5", "Set14", "B100", "Urban100"]),
                                 ("test_ESC_LTE_DIV2K.yml", "div2k", ["DIV2K"])):  # fmt: skip
        opt = load(name)
        entries = [(d["name"], d["test_scale"], d["protocol"]) for d in opt["datasets"].values()]
        expected = [(f"{n}_x{s:g}", s, protocol) for n in sets for s in (2, 3, 4, 6, 8, 12, 3.7)]
        assert entries == expected
        assert opt["path"]["pretrain_network_g"] == "experiments/pretrained_models/ESC-LTE.pth"
        assert opt["network_g"] == train["network_g"]
    small = load("train_ESC_LTE_small.yml")
    assert small["path"]["strict_load_g"] is False  # an ESC body: the head starts fresh
    assert small["path"]["pretrain_network_g"] == "tests/data/ESC-light_x2_small.pth"
