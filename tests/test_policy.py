"""The network matches SPEC.md: sizes, parameter counts, probabilities."""

from __future__ import annotations

import pytest
import torch

from hmarl.agent.policy import (
    DecisionHead,
    HierarchicalPolicy,
    MacroNet,
    MicroNet,
    count_parameters,
)


def test_parameter_counts_match_the_spec_at_n20() -> None:
    policy = HierarchicalPolicy(20)
    assert count_parameters(policy.macro) == 48_512
    assert count_parameters(policy.micro) == 5_984
    assert count_parameters(policy.head) == 29_315
    assert count_parameters(policy) == 83_811


def test_layer_shapes() -> None:
    policy = HierarchicalPolicy(20)
    assert isinstance(policy.macro, MacroNet) and isinstance(policy.micro, MicroNet)
    assert isinstance(policy.head, DecisionHead)
    assert (
        policy.macro.fc1.in_features,
        policy.macro.fc1.out_features,
        policy.macro.fc2.out_features,
    ) == (60, 256, 128)
    assert (
        policy.micro.fc1.in_features,
        policy.micro.fc1.out_features,
        policy.micro.fc2.out_features,
    ) == (60, 64, 32)
    dims = [(layer.in_features, layer.out_features) for layer in policy.head.hidden]
    assert dims == [(162, 128), (128, 64)] and policy.head.out.out_features == 3


@pytest.mark.parametrize("batch", [(1,), (7,), (3, 5)])
def test_probabilities_sum_to_one(batch: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    policy = HierarchicalPolicy(20).eval()
    x = torch.randn(*batch, 60)
    probs = policy(x, torch.randn(*batch, 60), torch.zeros(batch), torch.ones(batch))
    assert probs.shape == (*batch, 3)
    assert torch.all(probs > 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(batch))


def test_sizes_and_dropout_come_from_arguments() -> None:
    policy = HierarchicalPolicy(
        5,
        macro_hidden=32,
        macro_dim=16,
        micro_hidden=8,
        micro_dim=4,
        head_hidden=(10,),
        dropout=0.5,
    )
    assert policy.macro.fc1.in_features == 15 and policy.head.hidden[0].in_features == 16 + 4 + 2
    assert policy.head.p == 0.5 and policy.macro.p == 0.5


def test_dropout_is_active_in_training_and_off_in_eval() -> None:
    torch.manual_seed(0)
    policy = HierarchicalPolicy(20)
    x = torch.randn(64, 60)
    pos, cash = torch.zeros(64), torch.ones(64)
    policy.eval()
    assert torch.equal(policy(x, x, pos, cash), policy(x, x, pos, cash))
    policy.train()
    assert not torch.equal(policy(x, x, pos, cash), policy(x, x, pos, cash))


def test_factored_head_equals_the_plain_head() -> None:
    torch.manual_seed(0)
    head = DecisionHead(128, 32, (128, 64)).eval()
    macro, micro = torch.randn(9, 128), torch.randn(9, 32)
    pos, cash = torch.rand(9) * 2 - 1, torch.rand(9)
    plain = head.out(
        torch.relu(
            head.hidden[1](
                torch.relu(
                    head.hidden[0](torch.cat([macro, micro, pos[:, None], cash[:, None]], -1))
                )
            )
        )
    )
    torch.testing.assert_close(head(macro, micro, pos, cash), plain)
