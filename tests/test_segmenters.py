"""The segmenter registry: every decoder builds, adapts, swaps its head, freezes what it
never runs and reloads through load_segmenter and smp.from_pretrained; U-Net through the CLI."""
from __future__ import annotations

import json

import pytest
import segmentation_models_pytorch as smp
import torch
from conftest import SIZE, cli, cli_exit

from doll.errors import DollError
from doll.models.adapters import set_mode
from doll.models.segmenter import (
    DECODERS,
    build_segmenter,
    check_image_size,
    load_segmenter,
    replace_head,
)


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_every_decoder_adapts_swaps_its_head_and_trains_only_what_it_runs(decoder):
    model = build_segmenter(decoder, "resnet18", 3)
    assert type(model).__name__ == DECODERS[decoder]
    if decoder == "pspnet":  # smp's PSPNet keeps encoder stages it never runs: frozen, out of the counts
        assert any(getattr(p, "unused", False) for p in model.parameters())
    replace_head(model, 5)
    x = torch.zeros(2, 1, 64, 64)
    assert model(x).shape == (2, 5, 64, 64)
    for mode in ("full", "adapter", "head"):
        m = replace_head(build_segmenter(decoder, "resnet18", 3), 2)
        counts = set_mode(m, mode, 64)
        assert counts["trainable_params"] > 0
        if mode != "full":
            assert counts["trainable_params"] < counts["total_params"]
        m(torch.rand(2, 1, 64, 64)).sum().backward()
        for name, p in m.named_parameters():
            if p.requires_grad:  # every trainable weight gets a gradient (DDP needs it)
                assert p.grad is not None, (decoder, mode, name)
        if mode == "adapter":
            assert any(n.startswith("adapters") for n, p in m.named_parameters() if p.requires_grad)


def test_image_sizes_the_network_cannot_take_are_refused_with_the_nearest_valid_ones():
    check_image_size("pspnet", "resnet18", 32)
    with pytest.raises(DollError, match=r"multiple of 8.*use 32 or 40"):
        check_image_size("pspnet", "resnet18", 36)
    with pytest.raises(DollError, match=r"use 8"):
        check_image_size("pspnet", "resnet18", 7)
    with pytest.raises(DollError, match=r"multiple of 32"):
        check_image_size("fpn", "resnet18", 48)


def test_unet_pretrain_and_finetune_through_the_cli(pipeline, phantom, tmp_path, capsys):
    pre = tmp_path / "unet_pre"
    cli("pretrain", "--labels", pipeline["labels"], "--out", pre, "--decoder", "unet", "--encoder", "resnet18",
        "--epochs", 1, "--batch-size", 8)
    config = json.loads((pre / "config.json").read_text())
    assert config["_model_class"] == "Unet" and config["doll"]["decoder"] == "unet"
    # the folder loads offline with smp's own loader, and doll's
    loaded = smp.from_pretrained(str(pre))
    ours, cfg = load_segmenter(pre)
    assert type(loaded).__name__ == type(ours).__name__ == "Unet"
    state = ours.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k
    for mode in ("full", "adapter", "head"):
        out = tmp_path / f"ft_{mode}"
        cli("finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", phantom / "anatomy", "--init", pre,
            "--mode", mode, "--epochs", 1, "--label-fraction", 0.25, "--out", out)
        m = json.loads((out / "metrics.json").read_text())
        assert 0 <= m["mean_iou"] <= 1 and m["runs"][0]["mode"] == mode
        assert json.loads((out / "model" / "config.json").read_text())["doll"]["decoder"] == "unet"
        model, _ = load_segmenter(out / "model")  # adapters too
        assert type(model).__name__ == "Unet"
    out = tmp_path / "ft_random"
    cli("finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", phantom / "anatomy", "--init", "random",
        "--decoder", "unet", "--encoder", "resnet18", "--image-size", SIZE, "--epochs", 1, "--out", out)
    assert json.loads((out / "model" / "config.json").read_text())["_model_class"] == "Unet"
    # a pretrained folder fixes its network: another --decoder is refused before anything is written
    code, err = cli_exit(capsys, "finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", phantom / "anatomy",
                         "--init", pre, "--decoder", "fpn", "--out", tmp_path / "clash", "--quiet")
    assert code == 2 and "holds a unet" in err and not (tmp_path / "clash").exists()


def test_finetune_refuses_an_image_size_its_network_cannot_take_before_writing(phantom, tmp_path, capsys):
    code, err = cli_exit(capsys, "finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", phantom / "anatomy",
                         "--init", "random", "--encoder", "resnet18", "--image-size", 36, "--out", tmp_path / "o",
                         "--quiet")
    assert code == 2 and "multiple of 8" in err and "use 32 or 40" in err
    assert not (tmp_path / "o").exists()


def test_transfer_encoder_keeps_the_pretrained_encoder_under_a_new_decoder(pipeline, phantom):
    from doll.finetuning.settings import FinetuneSettings, build_model

    pre, _ = load_segmenter(pipeline["pretrain"])
    common = {"task": "jsrt", "dataset": "jsrt", "root": str(phantom / "anatomy"), "init": str(pipeline["pretrain"])}
    enc_only, info = build_model(FinetuneSettings(**common, transfer="encoder"), 5)
    whole, _ = build_model(FinetuneSettings(**common), 5)
    assert info["transfer"] == "encoder"
    for k, v in pre.encoder.state_dict().items():
        assert torch.equal(enc_only.encoder.state_dict()[k], v) and torch.equal(whole.encoder.state_dict()[k], v)
    changed = [k for k, v in pre.decoder.state_dict().items() if not torch.equal(enc_only.decoder.state_dict()[k], v)]
    assert changed and all(torch.equal(whole.decoder.state_dict()[k], v) for k, v in pre.decoder.state_dict().items())
    with pytest.raises(DollError, match="--transfer"):
        from doll.finetuning.settings import check_settings
        check_settings(FinetuneSettings(**{**common, "init": "random"}, transfer="encoder"))


def test_finetune_checks_the_imagenet_file_and_a_pretrained_encoder_before_writing(pipeline, phantom, tmp_path,
                                                                                     capsys):
    anatomy = phantom / "anatomy"
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a state dict")
    for init, words in ((f"imagenet:{tmp_path / 'nope.pth'}", "no such file"), (f"imagenet:{junk}", "junk.pth"),
                        (f"imagenet:{tmp_path}", "is a folder")):
        out = tmp_path / "o"
        code, err = cli_exit(capsys, "finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", anatomy, "--init",
                             init, "--encoder", "resnet18", "--image-size", SIZE, "--out", out, "--quiet")
        assert code == 2 and words in err and not out.exists(), (init, err)
    code, err = cli_exit(capsys, "finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", anatomy, "--init",
                         pipeline["pretrain"], "--encoder", "resnet50", "--out", tmp_path / "e", "--quiet")
    assert code == 2 and "holds a resnet18 encoder" in err and not (tmp_path / "e").exists()
