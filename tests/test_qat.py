"""QAT: fake-quant preparation follows the target's rules and the learned weights reach the float student."""

import pytest
import torch

from pipeline.models import build_model
from pipeline.models.conv_bn import conv_bn_pairs
from pipeline.qat.fake_quant import copy_back, prepare_qat
from pipeline.target import TARGETS
from pipeline.target.rules import TargetRules


def test_conv_bn_pairs_found_in_resnet():
    model = build_model("resnet8", 10, 1)
    pairs = conv_bn_pairs(model)
    assert pairs["bn1"] == "conv1" and pairs["layer1.0.bn2"] == "layer1.0.conv2"
    assert pairs["layer2.0.shortcut.1"] == "layer2.0.shortcut.0"


@pytest.mark.parametrize("arch", ["resnet8", "wrn_16_1", "mobile_half", "shufflenetv2_0_5"])
def test_weights_learned_in_qat_reach_the_float_module(arch):
    torch.manual_seed(0)
    model = build_model(arch, 10, 1).eval()
    x = torch.randn(4, 1, 16, 16)
    qat = prepare_qat(model, TARGETS["edge_tpu"], x)
    opt = torch.optim.SGD(qat.parameters(), lr=0.05)
    for _ in range(3):  # train a little so weights and BN statistics move away from the source
        loss = qat(x).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    qat.eval()
    qat.apply(torch.ao.quantization.disable_fake_quant)  # the QAT graph without rounding ≙ the float maths
    fresh = build_model(arch, 10, 1).eval()
    copy_back(qat, fresh)
    with torch.no_grad():
        expected, got = qat(x), fresh(x)
    assert not torch.allclose(got, model(x), atol=1e-3)  # it did learn something
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_target_weight_scheme_reaches_the_observers():
    model = build_model("resnet8", 10, 1)
    x = torch.randn(2, 1, 8, 8)

    def schemes(rules):
        qat = prepare_qat(model, rules, x)
        return {m.weight_fake_quant.qscheme for m in qat.modules() if hasattr(m, "weight_fake_quant")}

    assert schemes(TARGETS["edge_tpu"]) == {torch.per_channel_symmetric}
    assert schemes(TargetRules(name="t", description="per-tensor target", per_channel=False)) == {torch.per_tensor_symmetric}
