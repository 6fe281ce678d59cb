"""course_lib.checks: right answers pass, wrong ones get a specific hint, nothing raises."""

import math

import pytest

import torch
import torch.nn.functional as F

from course_lib import checks


def good_q_sample(x0, t, noise, alphas_cumprod):
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def test_q_sample_right_answer_passes():
    result = checks.check_q_sample(good_q_sample)
    assert result.passed and bool(result)
    assert "Correct" in str(result) and "Correct" in result._repr_html_()


def test_q_sample_diagnoses_common_mistakes():
    no_sqrt = lambda x0, t, noise, ab: ab[t].view(-1, 1, 1, 1) * x0 + (1 - ab[t].view(-1, 1, 1, 1)) * noise
    result = checks.check_q_sample(no_sqrt)
    assert not result and "square roots" in result.message and result.hint

    first_t_only = lambda x0, t, noise, ab: ab[t[0]].sqrt() * x0 + (1 - ab[t[0]]).sqrt() * noise
    assert "its own t" in checks.check_q_sample(first_t_only).message

    wrong_shape = lambda x0, t, noise, ab: (ab[t].sqrt() * x0.flatten(1).T).T
    assert "shape" in checks.check_q_sample(wrong_shape).message

    # ignores the alpha-bars it is given and uses the linear schedule's: right for the linear schedule only
    from course_lib.schedule import NoiseSchedule
    own_schedule = lambda x0, t, noise, ab: NoiseSchedule("linear").q_sample(x0, t, noise)
    assert "the alphas_cumprod you are given" in checks.check_q_sample(own_schedule).message


def test_unwritten_and_crashing_solutions_say_not_yet():
    def unwritten(x0, t, noise, alphas_cumprod):
        # YOUR CODE HERE
        raise NotImplementedError()

    result = checks.check_q_sample(unwritten)
    assert not result and "NotImplementedError" in result.message
    assert str(result).startswith("❌ Not yet") and "Hint:" in str(result)

    crashing = lambda x0, t, noise, ab: x0 @ torch.ones(3, 3)
    assert "raised RuntimeError" in checks.check_q_sample(crashing).message

    assert "function itself" in checks.check_q_sample(good_q_sample(torch.zeros(1, 1, 28, 28), torch.tensor([0]),
                                                                    torch.zeros(1, 1, 28, 28),
                                                                    torch.ones(1000))).message


def good_cosine(T, s=0.008, cap=0.999):
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    ab = f / f[0]
    return (1 - ab[1:] / ab[:-1]).clamp(max=cap)


def test_cosine_schedule_check():
    assert checks.check_cosine_schedule(good_cosine)
    unclipped = lambda T, s=0.008: good_cosine(T, s, cap=1.0)
    assert "0.999" in checks.check_cosine_schedule(unclipped).message
    one_too_many = lambda T, s=0.008: torch.cat([good_cosine(T, s), torch.zeros(1)])
    assert "T + 1" in checks.check_cosine_schedule(one_too_many).message
    linear = lambda T, s=0.008: torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    assert not checks.check_cosine_schedule(linear)
    fixed_offset = lambda T, s=0.008: good_cosine(T)          # ignores s
    assert "the s you are given" in checks.check_cosine_schedule(fixed_offset).message


def good_training_loss(model, x0, t, noise, alphas_cumprod):
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    return ((model(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t) - noise) ** 2).mean()


def test_training_loss_check():
    assert checks.check_training_loss(good_training_loss)
    vs_x0 = lambda m, x0, t, n, ab: ((m(ab[t].view(-1, 1, 1, 1).sqrt() * x0 + (1 - ab[t].view(-1, 1, 1, 1)).sqrt() * n, t) - x0) ** 2).mean()
    assert "predicts the noise" in checks.check_training_loss(vs_x0).message
    clean_input = lambda m, x0, t, n, ab: ((m(x0, t) - n) ** 2).mean()
    assert "noised x_t" in checks.check_training_loss(clean_input).message
    per_pixel = lambda m, x0, t, n, ab: (m(x0, t) - n) ** 2
    assert "scalar" in checks.check_training_loss(per_pixel).message


def good_ddpm_step(noise_pred, t, x_t, z, alphas, alphas_cumprod, posterior_variance):
    mean = (x_t - (1 - alphas[t]) / (1 - alphas_cumprod[t]).sqrt() * noise_pred) / alphas[t].sqrt()
    return mean if t == 0 else mean + posterior_variance[t].sqrt() * z


def test_ddpm_step_check():
    assert checks.check_ddpm_step(good_ddpm_step)

    def slip(kind):
        def step(eps, t, x, z, a, ab, var):
            alpha = ab[t] if kind == "abar" else a[t]
            sign = -1 if kind == "sign" else 1
            mean = (x - sign * (1 - a[t]) / (1 - ab[t]).sqrt() * eps) / alpha.sqrt()
            scale = var[t] if kind == "variance" else var[t].sqrt()
            return mean if t == 0 else mean + scale * z
        return step

    assert "alpha_t, this step's alpha" in checks.check_ddpm_step(slip("abar")).message
    assert "subtracted" in checks.check_ddpm_step(slip("sign")).message
    assert "standard deviation" in checks.check_ddpm_step(slip("variance")).message
    no_noise = lambda eps, t, x, z, a, ab, v: good_ddpm_step(eps, 0, x, z, a, ab, v) * 0 + (x - (1 - a[t]) / (1 - ab[t]).sqrt() * eps) / a[t].sqrt()
    assert "sigma_t * z is missing" in checks.check_ddpm_step(no_noise).message
    noise_at_zero = lambda eps, t, x, z, a, ab, v: (x - (1 - a[t]) / (1 - ab[t]).sqrt() * eps) / a[t].sqrt() + v[max(t, 1)].sqrt() * z
    assert "t = 0" in checks.check_ddpm_step(noise_at_zero).message
    # sigma_t = sqrt(beta_t), the other choice Ho et al. mention, is within float32 tolerance of the posterior's at
    # most t; the check still tells them apart, and says which variance it wants
    sqrt_beta = lambda eps, t, x, z, a, ab, v: (x - (1 - a[t]) / (1 - ab[t]).sqrt() * eps) / a[t].sqrt() + (
        (1 - a[t]).sqrt() * z if t > 0 else 0)
    assert "not by the square root of beta_t" in checks.check_ddpm_step(sqrt_beta).message


# --- notebook 03 ---

def test_kl_check_accepts_the_right_answer_and_names_mistakes():
    right = lambda m, lv: 0.5 * (m ** 2 + lv.exp() - 1 - lv).sum(1)
    assert checks.check_kl_divergence(right)
    assert "0.5" in checks.check_kl_divergence(lambda m, lv: 2 * right(m, lv)).message
    assert "exp(logvar)" in checks.check_kl_divergence(lambda m, lv: 0.5 * (m ** 2 + (lv / 2).exp() - 1 - lv).sum(1)).message
    assert "per image" in checks.check_kl_divergence(lambda m, lv: right(m, lv).mean()).message
    assert not checks.check_kl_divergence(lambda m, lv: (_ for _ in ()).throw(NotImplementedError()))


def test_reparameterize_check_accepts_the_right_answer_and_names_mistakes():
    assert checks.check_reparameterize(lambda m, lv, e: m + (0.5 * lv).exp() * e)
    assert "std" in checks.check_reparameterize(lambda m, lv, e: m + lv.exp() * e).message
    assert "gradients" in checks.check_reparameterize(lambda m, lv, e: (m + (0.5 * lv).exp() * e).detach()).message
    # right values, but the std is detached: no gradient reaches logvar
    assert "reach logvar" in checks.check_reparameterize(lambda m, lv, e: m + (0.5 * lv).exp().detach() * e).message
    assert "reach mean" in checks.check_reparameterize(lambda m, lv, e: m.detach() + (0.5 * lv).exp() * e).message
    assert not checks.check_reparameterize(lambda m, lv, e: m + torch.randn_like(m))
    assert not checks.check_reparameterize(42)


def test_contrastive_loss_check_catches_the_usual_mistakes():
    import torch.nn.functional as F

    from course_lib.clip import contrastive_loss

    right = lambda u, w, s: contrastive_loss(s.exp() * u @ w.T)
    assert checks.check_contrastive_loss(right)
    one_way = lambda u, w, s: F.cross_entropy(s.exp() * u @ w.T, torch.arange(len(u)))
    summed = lambda u, w, s: 2 * right(u, w, s)
    per_pair = lambda u, w, s: F.cross_entropy(s.exp() * u @ w.T, torch.arange(len(u)), reduction="none")
    no_exp = lambda u, w, s: contrastive_loss(s * u @ w.T)
    divided = lambda u, w, s: contrastive_loss(u @ w.T / s.exp())
    no_temperature = lambda u, w, s: contrastive_loss(u @ w.T)
    for wrong, words in [(one_way, "one direction"), (summed, "averages"), (per_pair, "one number"),
                         (no_exp, "use e^s"), (divided, "multiplies them"), (no_temperature, "too flat")]:
        result = checks.check_contrastive_loss(wrong)
        assert not result and words in result.message, result.message


def test_zero_shot_check_catches_the_usual_mistakes():
    import torch.nn.functional as F

    right = lambda image, text: (F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T).argmax(1)
    assert checks.check_zero_shot(right)
    unnormalised = lambda image, text: (image @ text.T).argmax(1)
    matrix = lambda image, text: F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    wrong_dim = lambda image, text: (F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T).argmax(0)
    for wrong, words in [(unnormalised, "normalise"), (matrix, "similarity matrix"), (wrong_dim, "dim=1")]:
        result = checks.check_zero_shot(wrong)
        assert not result and words in result.message, result.message


# --- every correct answer passes, in any precision ---------------------------------------------------------
# Correct answers written in float64 (or returning Python numbers), and a float32 cosine schedule: the checks
# compare in double precision, with tolerances that follow the answer's precision.


def f64_q_sample(x0, t, noise, ac):
    ab = ac.double()[t].view(-1, 1, 1, 1)
    return ab.sqrt() * x0.double() + (1 - ab).sqrt() * noise.double()


def f64_cosine_betas(T, s=0.008):
    steps = torch.arange(T + 1, dtype=torch.float32) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    ab = f / f[0]
    return (1 - ab[1:] / ab[:-1]).clamp(max=0.999)


def f64_loss(model, x0, t, noise, ac):
    ab = ac.double()[t].view(-1, 1, 1, 1)
    xt = ab.sqrt() * x0.double() + (1 - ab).sqrt() * noise.double()
    return ((model(xt.float(), t).double() - noise.double()) ** 2).mean()


def f64_ddpm_step(noise_pred, t, x_t, z, alphas, ac, pv):
    a, ab = alphas.double()[t], ac.double()[t]
    mean = (x_t.double() - (1 - a) / (1 - ab).sqrt() * noise_pred.double()) / a.sqrt()
    return mean if t == 0 else mean + pv.double()[t].sqrt() * z.double()


def f64_kl(mean, logvar):
    return 0.5 * (mean.double() ** 2 + logvar.double().exp() - 1 - logvar.double()).sum(1)


def f64_rep(mean, logvar, eps):
    return mean.double() + torch.exp(0.5 * logvar.double()) * eps.double()


def f64_clip_loss(image_features, text_features, logit_scale):
    l = logit_scale.double().exp() * image_features.double() @ text_features.double().T
    t = torch.arange(len(l))
    return float((F.cross_entropy(l, t) + F.cross_entropy(l.T, t)) / 2)


def f64_zs(i, t):
    return (F.normalize(i.double(), dim=-1) @ F.normalize(t.double(), dim=-1).T).argmax(1)


def f64_ca(it, tt, Wq, Wk, Wv):
    q, k, v = it.double() @ Wq.double(), tt.double() @ Wk.double(), tt.double() @ Wv.double()
    return (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1) @ v


def f64_guided(u, c, s):
    return u.double() + s * (c.double() - u.double())


def test_correct_answers_in_float64_or_as_numbers_pass():
    answers = {"q_sample": f64_q_sample, "cosine_schedule": f64_cosine_betas, "training_loss": f64_loss,
               "ddpm_step": f64_ddpm_step, "kl_divergence": f64_kl, "reparameterize": f64_rep,
               "contrastive_loss": f64_clip_loss, "zero_shot": f64_zs, "cross_attention": f64_ca,
               "classifier_free_guidance": f64_guided}
    for name, answer in answers.items():
        result = getattr(checks, "check_" + name)(answer)
        assert result, f"{name}: {result.message}"


def test_the_posterior_mean_form_of_a_ddpm_step_passes_in_float32():
    def posterior_step(noise_pred, t, x_t, z, alphas, ac, pv):      # what DDPMScheduler computes
        ab, ab_prev = ac[t], (ac[t - 1] if t > 0 else torch.tensor(1.0))
        x0 = (x_t - (1 - ab).sqrt() * noise_pred) / ab.sqrt()
        mean = ab_prev.sqrt() * (1 - alphas[t]) / (1 - ab) * x0 + alphas[t].sqrt() * (1 - ab_prev) / (1 - ab) * x_t
        return mean if t == 0 else mean + pv[t].sqrt() * z
    assert checks.check_ddpm_step(posterior_step)
    # ... while a real mistake in float64 is still caught: alpha-bar where alpha belongs
    def wrong(noise_pred, t, x_t, z, alphas, ac, pv):
        return f64_ddpm_step(noise_pred, t, x_t, z, ac, ac, pv)
    assert not checks.check_ddpm_step(wrong)


# --- escalating feedback (issue 19) ---------------------------------------------------

CHECKS_AND_ARGUMENTS = {   # check -> the learner's function's parameter names, to build a solution from its guide
    checks.check_q_sample: "x0, t, noise, alphas_cumprod",
    checks.check_cosine_schedule: "num_train_timesteps, s=0.008",
    checks.check_training_loss: "model, x0, t, noise, alphas_cumprod",
    checks.check_ddpm_step: "noise_pred, t, x_t, z, alphas, alphas_cumprod, posterior_variance",
    checks.check_kl_divergence: "mean, logvar",
    checks.check_reparameterize: "mean, logvar, eps",
    checks.check_contrastive_loss: "image_features, text_features, logit_scale",
    checks.check_zero_shot: "image_features, text_features",
    checks.check_cross_attention: "image_tokens, text_tokens, W_q, W_k, W_v",
    checks.check_classifier_free_guidance: "noise_uncond, noise_cond, guidance_scale",
    checks.check_img2img_timesteps: "timesteps, strength",
}


@pytest.fixture(autouse=True)
def fresh_ladders():
    """Each test starts at the bottom of every hint ladder, as a fresh kernel does."""
    checks._not_yet.clear()


def _stub(*args, **kwargs):
    raise NotImplementedError()


def test_every_guide_escalates_without_code_and_its_solution_passes(capsys):
    for check, arguments in CHECKS_AND_ARGUMENTS.items():
        first = check(_stub)
        name = first.exercise
        guide = checks.GUIDES[name]
        assert not first and "The task:" in first.message and guide.task in first.message
        assert first.hint.startswith(guide.hints[0])
        assert len(guide.hints) >= 3, name
        for text in (guide.task, *guide.hints):        # no code before it is asked for
            assert not any(code in text for code in ("return ", "torch.", "**", ".sqrt(", ".view(", "F.")), (name, text)
        second = check(_stub)
        assert second.hint.startswith(guide.hints[1]) and second.hint != first.hint
        checks.hint(name)                                 # asking moves one rung up
        assert guide.hints[2] in capsys.readouterr().out
        checks.solution(name)
        code = capsys.readouterr().out
        assert "return" in code
        namespace = {"torch": torch, "F": F, "math": math}
        body = "\n".join("    " + line for line in code.strip().splitlines())
        exec(f"def answer({arguments}):\n{body}", namespace)
        assert check(namespace["answer"]), (name, check(namespace["answer"]))
        again = check(_stub)                              # a pass resets the ladder
        assert again.hint.startswith(guide.hints[0])


def test_the_ladder_ends_by_pointing_at_the_solution():
    for _ in range(5):
        result = checks.check_reparameterize(_stub)
    assert 'checks.solution("reparameterisation")' in result.hint


def test_an_answer_that_works_in_place_passes():
    def in_place(mean, logvar, eps):
        return eps.mul_(torch.exp(0.5 * logvar)).add_(mean)

    assert checks.check_reparameterize(in_place)


def test_the_checkers_own_failure_is_not_blamed_on_the_learner(monkeypatch):
    monkeypatch.setattr(checks, "library_reparameterize", lambda *a: 1 / 0)
    result = checks.check_reparameterize(lambda mean, logvar, eps: mean + torch.exp(0.5 * logvar) * eps)
    assert not result and "checker itself failed" in result.message and "ZeroDivisionError" in result.message
    assert "your code" not in result.message


def test_asking_for_an_unchecked_exercise_says_what_to_do():
    try:
        checks.solution("no such exercise")
    except ValueError as err:
        assert "run its check cell first" in str(err)
    else:
        raise AssertionError("expected a ValueError")


def test_flow_exercises_pass_right_answers_and_name_the_usual_mistakes():
    def loss(model, x0, sigma, noise, flip=False, timestep_scale=1000):
        s = sigma.view(-1, 1, 1, 1)
        target = (x0 - noise) if flip else (noise - x0)
        return ((model((1 - s) * x0 + s * noise, timestep_scale * sigma) - target) ** 2).mean()

    assert checks.check_flow_matching_loss(loss)
    assert checks.check_flow_matching_loss(lambda *a: loss(*a).item())          # a Python float is one number too
    f64 = lambda model, x0, sigma, noise: loss(lambda x, t: model(x, t).double(), x0.double(), sigma.double(), noise.double())
    assert checks.check_flow_matching_loss(f64)                                  # float64
    assert "other way" in checks.check_flow_matching_loss(lambda *a: loss(*a, flip=True)).message
    assert "1000" in checks.check_flow_matching_loss(lambda *a: loss(*a, timestep_scale=1)).message

    assert checks.check_euler_step(lambda v, s, s_next, x: x + (s_next - s) * v)
    assert checks.check_euler_step(lambda v, s, s_next, x: (x.double() - (s - s_next) * v.double()))   # float64
    assert "towards the noise" in checks.check_euler_step(lambda v, s, s_next, x: x + (s - s_next) * v).message
    assert "x0" in checks.check_euler_step(lambda v, s, s_next, x: x - s * v).message


def test_split_heads_check():
    right = lambda x, h: x.view(x.shape[0], x.shape[1], h, -1).transpose(1, 2)
    assert checks.check_split_heads(right)
    assert checks.check_split_heads(lambda x, h: right(x.double(), h))                       # float64
    assert checks.check_split_heads(lambda x, h: x.unflatten(-1, (h, -1)).permute(0, 2, 1, 3))  # written differently
    scrambled = lambda x, h: x.reshape(x.shape[0], h, x.shape[1], -1)
    assert "shuffled between tokens" in checks.check_split_heads(scrambled).message
    strided = lambda x, h: x.view(x.shape[0], x.shape[1], -1, h).permute(0, 3, 1, 2)
    assert "consecutive slice" in checks.check_split_heads(strided).message
    no_swap = lambda x, h: x.view(x.shape[0], x.shape[1], h, -1)
    assert "before the token axis" in checks.check_split_heads(no_swap).message


CHECKS_AND_ARGUMENTS.update({checks.check_flow_matching_loss: "model, x0, sigma, noise", checks.check_split_heads: "x, num_heads",
                             checks.check_euler_step: "velocity, sigma, sigma_next, x"})


def test_the_diagnoses_a_fresh_student_run_found_wrong_are_right_now():
    forgot_scale = lambda uncond, cond, scale: cond
    assert "scale must multiply" in checks.check_classifier_free_guidance(forgot_scale).message
    paper_indexing = lambda x0, t, noise, ab: (ab[t - 1].view(-1, 1, 1, 1).sqrt() * x0
                                               + (1 - ab[t - 1].view(-1, 1, 1, 1)).sqrt() * noise)
    assert "t - 1" in checks.check_q_sample(paper_indexing).message
    inverted = lambda timesteps, strength: timesteps[int(len(timesteps) * strength):]
    assert "not the share skipped" in checks.check_img2img_timesteps(inverted).message


def test_every_exercise_names_at_least_three_mistakes():
    """Issue 19: each exercise's usual slips get their own message (those not covered by the tests above)."""
    import math as m

    def cos_betas(T, s=0.008, square=2):
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + s) / (1 + s) * m.pi / 2) ** square
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    assert checks.check_cosine_schedule(cos_betas)
    assert "square" in checks.check_cosine_schedule(lambda T, s=0.008: cos_betas(T, s, square=1)).message

    def attend(image, text, W_q, W_k, W_v, scale=True, axis=-1, weights_only=False):
        q, k, v = image @ W_q, text @ W_k, text @ W_v
        scores = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5 if scale else 1)
        w = scores.softmax(axis)
        return w if weights_only else w @ v
    assert checks.check_cross_attention(attend)
    assert checks.check_cross_attention(lambda *a: attend(*(x.double() for x in a)))          # float64
    for kwargs, words in [(dict(scale=False), "sqrt(d)"), (dict(axis=1), "last dimension"),
                          (dict(weights_only=True), "attention weights")]:
        assert words in checks.check_cross_attention(lambda *a, kw=kwargs: attend(*a, **kw)).message
    from_text = lambda image, text, W_q, W_k, W_v: attend(text, image, W_k, W_q, W_v.new_zeros(0, 0)) if False else \
        ((text @ W_k) @ (image @ W_q).transpose(-2, -1) / W_q.shape[1] ** 0.5).softmax(-1) @ (image @ W_q)
    assert "queries must come from the image" in checks.check_cross_attention(from_text).message

    start_cond = lambda u, c, s: c + s * (c - u)
    reversed_direction = lambda u, c, s: u + s * (u - c)
    for wrong, words in [(start_cond, "unconditional prediction, not the conditional"),
                         (reversed_direction, "direction is cond - uncond")]:
        assert words in checks.check_classifier_free_guidance(wrong).message

    noisiest = lambda ts, strength: ts[:int(len(ts) * strength)]
    how_many = lambda ts, strength: int(len(ts) * strength)
    assert "noisiest steps" in checks.check_img2img_timesteps(noisiest).message
    assert "not how many" in checks.check_img2img_timesteps(how_many).message
    assert checks.check_img2img_timesteps(lambda ts, strength: ts[len(ts) - int(len(ts) * strength):])
    assert checks.check_img2img_timesteps(lambda ts, strength: ts.flip(0)[:int(len(ts) * strength)].flip(0))

    def loss(model, x0, sigma, noise, mix_reversed=False, target_noise=False):
        s = sigma.view(-1, 1, 1, 1)
        x = s * x0 + (1 - s) * noise if mix_reversed else (1 - s) * x0 + s * noise
        return ((model(x, 1000 * sigma) - (noise if target_noise else noise - x0)) ** 2).mean()
    assert "mix is reversed" in checks.check_flow_matching_loss(lambda *a: loss(*a, mix_reversed=True)).message
    assert "not the noise alone" in checks.check_flow_matching_loss(lambda *a: loss(*a, target_noise=True)).message
    assert "scaled by how far" in checks.check_euler_step(lambda v, s, s_next, x: x - v).message


def test_loopholes_a_reviewer_found_in_the_later_checks_are_closed():
    """Wrong answers that matched on the checks' old fixed inputs: one width, one shape, whole-number strengths, a
    forgiving stand-in network."""
    fixed_width = lambda X, T, Wq, Wk, Wv: ((X @ Wq) @ (T @ Wk).transpose(-2, -1) / 8 ** 0.5).softmax(-1) @ (T @ Wv)
    assert not checks.check_cross_attention(fixed_width)

    right = lambda x, h: x.view(x.shape[0], x.shape[1], h, -1).transpose(1, 2)
    assert not checks.check_split_heads(lambda x, h: x.reshape(2, 5, h, -1).transpose(1, 2))        # fixed B, L
    assert not checks.check_split_heads(lambda x, h: right(x, h).half())                            # lossy dtype

    keep_last = lambda ts, strength: ts[len(ts) - int(len(ts) * strength):]
    assert checks.check_img2img_timesteps(keep_last)
    assert not checks.check_img2img_timesteps(lambda ts, s: ts[len(ts) - round(len(ts) * s):])     # rounds up 17.5
    assert not checks.check_img2img_timesteps(lambda ts, s: ts[ts < s * 1000])                      # by value, not count
    assert not checks.check_img2img_timesteps(lambda ts, s: ts[50 - int(50 * s):])                  # fixed N

    def loss(model, x0, sigma, noise, timestep=lambda sigma: 1000 * sigma):
        s = sigma.view(-1, 1, 1, 1)
        return ((model((1 - s) * x0 + s * noise, timestep(sigma)) - (noise - x0)) ** 2).mean()
    assert checks.check_flow_matching_loss(loss)
    assert not checks.check_flow_matching_loss(lambda *a: loss(*a, timestep=lambda s: (1000 * s).long()))   # truncated
    assert "shape (B,)" in checks.check_flow_matching_loss(
        lambda *a: loss(*a, timestep=lambda s: 1000 * s.view(-1, 1, 1, 1))).message
