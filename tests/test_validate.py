"""course_lib.validate: the ground floor every argument check and batching loop goes through."""

import pytest
import torch

from course_lib.validate import RANGE_TOLERANCE, batched, check_digits, check_int


@pytest.mark.parametrize("bad, says", [
    (torch.rand(28, 28), r"img must be digits as a \(B, 1, 28, 28\) tensor.*got \(28, 28\).*x\[None, None\]"),
    (torch.rand(5, 28, 28), r"img must be digits.*got \(5, 28, 28\); digits x of shape \(B, 28, 28\) become x\[:, None\]"),
    (torch.rand(2, 3, 28, 28), r"img must be digits.*got \(2, 3, 28, 28\)"),
    ([[0.5]], r"img must be digits.*got list"),
    (torch.randint(0, 255, (2, 1, 28, 28)), r"img must be a float tensor.*int64.*x.float\(\) / 255"),
    (torch.rand(2, 1, 28, 28) * 2 - 1, r"img values must be in \[0, 1\].*\(x \+ 1\) / 2"),
    (torch.full((1, 1, 28, 28), float("nan")), r"img values must be in \[0, 1\]"),
])
def test_check_digits_names_the_argument_and_the_fix(bad, says):
    with pytest.raises(ValueError, match=says):
        check_digits(bad, "img")


def test_check_digits_tolerance_is_opt_in():
    just_over = torch.full((1, 1, 28, 28), 1 + RANGE_TOLERANCE / 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_digits(just_over)
    check_digits(just_over, tolerance=RANGE_TOLERANCE)
    check_digits(torch.rand(3, 1, 28, 28))
    check_digits(torch.rand(0, 1, 28, 28))                    # an empty batch is still a batch


def test_batched_equals_one_call_and_checks_its_batch_size():
    x = torch.randn(2503, 5)
    assert torch.equal(batched(lambda b: b * 2 + 1, x, batch_size=1000), x * 2 + 1)
    calls = []
    batched(lambda b: calls.append(len(b)) or b, x, batch_size=1000)
    assert calls == [1000, 1000, 503]
    with pytest.raises(ValueError, match="batch_size must be an integer"):
        batched(lambda b: b, x, batch_size=0)


def test_check_int_message_names_the_argument():
    with pytest.raises(ValueError, match=r"^num_inference_steps must be an integer from 1 to 1000, got 0$"):
        check_int("num_inference_steps", 0, 1, 1000)
