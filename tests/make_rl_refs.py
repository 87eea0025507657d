#!/usr/bin/env python3
"""make_rl_refs.py — float64 references for lmc's GRPO and PPO losses
(src/train/rl_loss.c), written to tests/fixtures/rl/refs.txt.

The formulas are TRL 1.16's, re-typed here line by line from
trl/trainer/grpo_trainer.py (_compute_loss: coef_1/coef_2 clipped
objective, k3 per_token_kl, the "grpo" / "bnpo" / "dr_grpo" averages;
advantages (r - group mean) / (group std + 1e-4) with torch's unbiased
std) and trl/trainer/ppo_trainer.py (rewards = -kl_coef * (logp - ref) with
the score on the last token, GAE reversed over the response, masked_whiten
with the unbiased variance, clipped value loss 0.5 * max(...), clipped
policy loss max(-A r, -A clip(r))). The trl package installs here but does
not import without its heavy dependencies (transformers, accelerate,
pandas), so its trainer classes cannot be called on a bare batch; the
gradients come from torch autograd in float64.

Format: one line "name n" then n numbers, per array.
"""
import os
import torch

torch.manual_seed(1234)
D = torch.float64
out = []


def put(name, t):
    t = torch.as_tensor(t, dtype=D).flatten()
    out.append(f"{name} {t.numel()}\n" + " ".join(f"{x:.17g}" for x in t.tolist()) + "\n")


# ---- GRPO: 2 prompts x group 3 = 6 sequences of ragged lengths
lens = [5, 3, 7, 1, 4, 6]
n, G, Tm = len(lens), 3, max(lens)
off = [0]
for l in lens:
    off.append(off[-1] + l)
N = off[-1]
old = -torch.rand(N, dtype=D) * 3 - 0.1
logp = old + torch.randn(N, dtype=D) * 0.3      # ratios well outside [0.8, 1.28] for some
ref = old + torch.randn(N, dtype=D) * 0.2
rew = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.0, 1.0], dtype=D)
put("lens", lens)
put("old_logp", old)
put("logp", logp)
put("ref_logp", ref)
put("rewards", rew)


def pad(x):
    m = torch.zeros(n, Tm, dtype=D)
    p = torch.zeros(n, Tm, dtype=D)
    for i in range(n):
        p[i, : lens[i]] = x[off[i]:off[i + 1]]
        m[i, : lens[i]] = 1
    return p, m


def unpad(x):
    return torch.cat([x[i, : lens[i]] for i in range(n)])


grouped = rew.view(-1, G)
mean = grouped.mean(1).repeat_interleave(G)
std = grouped.std(1).repeat_interleave(G)         # unbiased, as nanstd
adv_std = (rew - mean) / (std + 1e-4)
adv_nostd = rew - mean
put("grpo_adv", adv_std)
put("grpo_adv_nostd", adv_nostd)

eps_low, eps_high, beta = 0.2, 0.28, 0.04
for loss_type in ["grpo", "bnpo", "dr_grpo"]:
    lp = logp.clone().requires_grad_(True)
    per_token_logps, mask = pad(lp)
    old_p, _ = pad(old)
    ref_p, _ = pad(ref)
    advantages = adv_std.unsqueeze(1)
    coef_1 = torch.exp(per_token_logps - old_p)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_kl = torch.exp(ref_p - per_token_logps) - (ref_p - per_token_logps) - 1
    per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
    per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    else:
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * 8)  # max_completion_length 8
    loss.backward()
    put(f"grpo_{loss_type}_loss", [loss.item()])
    put(f"grpo_{loss_type}_dlogp", lp.grad)
    kl = (per_token_kl * mask).sum() / mask.sum()
    put(f"grpo_{loss_type}_kl", [kl.item()])

# ---- PPO on the same batch: score per sequence, values at rollout, new values
kl_coef, gamma, lam, clip, clip_v, vf_coef = 0.05, 1.0, 0.95, 0.2, 0.2, 0.1
values = torch.randn(N, dtype=D) * 0.5
vnew0 = values + torch.randn(N, dtype=D) * 0.3
put("values", values)
put("vpred", vnew0)
old_p, mask = pad(old)
ref_p, _ = pad(ref)
val_p, _ = pad(values)
kl = old_p - ref_p                                  # k1
non_score = -kl_coef * kl
rewards = non_score.clone()
for i in range(n):
    rewards[i, lens[i] - 1] += rew[i]
rewards = rewards * mask
lastgaelam = torch.zeros(n, dtype=D)
adv_rev = []
for t in reversed(range(Tm)):
    nextvalues = val_p[:, t + 1] if t < Tm - 1 else 0.0
    nextvalues = nextvalues * (mask[:, t + 1] if t < Tm - 1 else 0.0) if t < Tm - 1 else 0.0
    delta = rewards[:, t] + gamma * nextvalues - val_p[:, t]
    lastgaelam = delta + gamma * lam * lastgaelam
    lastgaelam = lastgaelam * mask[:, t]            # right-padded: nothing flows from padding
    adv_rev.append(lastgaelam)
advantages = torch.stack(adv_rev[::-1], 1)
returns = advantages + val_p
m = mask.bool()
am = advantages[m].mean()
var = ((advantages - am) ** 2)[m].mean() * (m.sum() / (m.sum() - 1))
advantages = (advantages - am) * torch.rsqrt(var + 1e-8)
put("ppo_rewards", unpad(rewards))
put("ppo_returns", unpad(returns))
put("ppo_adv", unpad(advantages))

lp = logp.clone().requires_grad_(True)
vp = vnew0.clone().requires_grad_(True)
new_logprobs, _ = pad(lp)
vpred, _ = pad(vp)
vpredclipped = torch.clamp(vpred, val_p - clip_v, val_p + clip_v)
vf_losses1 = (vpred - returns) ** 2
vf_losses2 = (vpredclipped - returns) ** 2
vf_loss = 0.5 * torch.max(vf_losses1, vf_losses2)[m].mean()
ratio = torch.exp(new_logprobs - old_p)
pg_losses = -advantages * ratio
pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
pg_loss = torch.max(pg_losses, pg_losses2)[m].mean()
loss = pg_loss + vf_coef * vf_loss
loss.backward()
put("ppo_loss", [loss.item()])
put("ppo_pg_loss", [pg_loss.item()])
put("ppo_vf_loss", [vf_loss.item()])
put("ppo_dlogp", lp.grad)
put("ppo_dv", vp.grad)
put("ppo_clipfrac", [(pg_losses2 > pg_losses)[m].double().mean().item()])

d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "rl")
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, "refs.txt"), "w") as f:
    f.write("".join(out))
print("wrote", os.path.join(d, "refs.txt"))
