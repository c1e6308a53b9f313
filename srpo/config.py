"""Typed configuration: every SRPO hyperparameter in one place, with the paper's value.

- Stage configs (:class:`BehaviorConfig`, :class:`CriticConfig`, :class:`PolicyConfig`)
  default to the public code's settings (method §5), i.e. the ``paper`` profile.
- :data:`TASKS` holds the per-task presets (method §6 temperatures, method §4 expectiles
  and reward preprocessing) plus the exact-score bandit tasks of this suite.
- :data:`PROFILES` scales the budgets: ``smoke`` (seconds), ``default`` (a 2-core CPU),
  ``paper`` (method §5).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from srpo.policy import WEIGHTINGS, Weighting
from srpo.precision import Precision, check as check_precision

RewardMode = Literal["locomotion", "antmaze", "none"]


@dataclass(frozen=True)
class BehaviorConfig:
    """Diffusion behavior model eps_psi (method §2, §5)."""

    steps: int = 2_000_000
    batch_size: int = 2048
    lr: float = 3e-4  # AdamW
    weight_decay: float = 0.01  # AdamW's default decoupled decay
    width: int = 256
    n_blocks: int = 3
    dropout: float = 0.1
    time_features: int = 64
    time_scale: float = 30.0
    t_min: float = 1e-3  # t ~ U(t_min, 1) in the DSM loss (E4)
    precision: Precision = "fp32"  # paper: fp32; tf32 / bf16: srpo/precision.py

    def __post_init__(self) -> None:
        _check_budget("behavior", self.steps, self.batch_size, self.lr)
        check_precision(self.precision, "behavior.precision")
        if not 0.0 < self.t_min < 1.0:
            raise ValueError(f"behavior.t_min must be in (0, 1), got {self.t_min}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"behavior.dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class CriticConfig:
    """IQL critic (method §4, §5)."""

    steps: int = 1_500_000
    batch_size: int = 256
    lr: float = 3e-4  # Adam
    hidden: tuple[int, ...] = (256, 256)
    gamma: float = 0.99
    expectile: float = 0.7  # AntMaze: 0.9
    target_ema: float = 0.005
    precision: Precision = "fp32"  # paper: fp32; tf32 / bf16: srpo/precision.py

    def __post_init__(self) -> None:
        _check_budget("critic", self.steps, self.batch_size, self.lr)
        check_precision(self.precision, "critic.precision")
        if not 0.5 <= self.expectile < 1.0:
            raise ValueError(f"critic.expectile must be in [0.5, 1), got {self.expectile}")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"critic.gamma must be in [0, 1), got {self.gamma}")
        if not 0.0 < self.target_ema <= 1.0:
            raise ValueError(f"critic.target_ema must be in (0, 1], got {self.target_ema}")


@dataclass(frozen=True)
class PolicyConfig:
    """SRPO policy extraction (E6, method §3, §5). Defaults are the public code's."""

    steps: int = 1_000_000
    batch_size: int = 256
    lr: float = 3e-4  # Adam with cosine decay to 0
    hidden: tuple[int, ...] = (256, 256)  # AntMaze: 4 layers
    beta: float = 0.05  # temperature; per-task values in TASKS (method §6)
    weighting: Weighting = "sigma2"  # paper and public code: sigma_t^2
    t_range: tuple[float, float] = (0.02, 0.98)  # public code
    t_fixed: float | None = None  # single-time ablation: overrides t_range
    baseline: bool = False  # subtract eps? paper Alg. 1: yes; public code default: no
    normalize_q_grad: bool = False  # public code: on for AntMaze ("regq")
    cosine_decay: bool = True
    precision: Precision = "fp32"  # paper: fp32; tf32 / bf16: srpo/precision.py
    # Keep the policy's weights every this many steps (and at the last), for an evaluation curve;
    # 0: none. The public code evaluates every 20k steps. Part of the checkpoint's config: a
    # finished run cannot grow snapshots afterwards, so a change retrains the policy.
    snapshot_every: int = 0

    def __post_init__(self) -> None:
        _check_budget("policy", self.steps, self.batch_size, self.lr)
        if self.snapshot_every < 0:
            raise ValueError(
                f"policy.snapshot_every must be >= 0 steps (0: no snapshots), got {self.snapshot_every}"
            )
        check_precision(self.precision, "policy.precision")
        if not self.beta > 0:
            raise ValueError(f"policy.beta must be > 0, got {self.beta}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"policy.weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        lo, hi = self.t_range
        if not 0.0 < lo < hi < 1.0:
            raise ValueError(f"policy.t_range must satisfy 0 < lo < hi < 1, got {self.t_range}")
        if self.t_fixed is not None and not 0.0 < self.t_fixed < 1.0:
            raise ValueError(f"policy.t_fixed must be in (0, 1), got {self.t_fixed}")


@dataclass(frozen=True)
class RunConfig:
    """Everything one `srpo train` run needs; a seed fixes the run."""

    task: str
    seed: int = 0
    profile: str = "default"
    reward_mode: RewardMode = "none"
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    log_every: int = 1000
    checkpoint_every: int = 10_000

    def __post_init__(self) -> None:
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise ValueError("log_every and checkpoint_every must be >= 1")
        if self.reward_mode not in ("locomotion", "antmaze", "none"):
            raise ValueError(f"reward_mode must be locomotion, antmaze or none, got {self.reward_mode!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_budget(stage: str, steps: int, batch_size: int, lr: float) -> None:
    if steps < 0:
        raise ValueError(f"{stage}.steps must be >= 0, got {steps}")
    if batch_size < 1:
        raise ValueError(f"{stage}.batch_size must be >= 1, got {batch_size}")
    if not 0 < lr <= 1:  # also refuses NaN and inf; a step size above 1 only ever diverges
        raise ValueError(f"{stage}.lr must be in (0, 1], got {lr}")


@dataclass(frozen=True)
class TaskPreset:
    """Per-task settings that differ from the stage defaults."""

    beta: float
    reward_mode: RewardMode = "locomotion"
    expectile: float = 0.7
    normalize_q_grad: bool = False
    policy_hidden: tuple[int, ...] = (256, 256)


_ANTMAZE = dict(
    reward_mode="antmaze", expectile=0.9, normalize_q_grad=True, policy_hidden=(256, 256, 256, 256)
)

TASKS: dict[str, TaskPreset] = {
    # method §6: temperatures from the public code.
    "halfcheetah-medium-expert": TaskPreset(0.01),
    "halfcheetah-medium": TaskPreset(0.2),
    "halfcheetah-medium-replay": TaskPreset(0.2),
    "hopper-medium-expert": TaskPreset(0.01),
    "hopper-medium": TaskPreset(0.05),
    "hopper-medium-replay": TaskPreset(0.2),
    "walker2d-medium-expert": TaskPreset(0.1),
    "walker2d-medium": TaskPreset(0.05),
    "walker2d-medium-replay": TaskPreset(0.5),
    "antmaze-umaze": TaskPreset(0.02, **_ANTMAZE),
    "antmaze-umaze-diverse": TaskPreset(0.04, **_ANTMAZE),
    "antmaze-medium-play": TaskPreset(0.08, **_ANTMAZE),
    "antmaze-medium-diverse": TaskPreset(0.05, **_ANTMAZE),
    "antmaze-large-play": TaskPreset(0.06, **_ANTMAZE),
    "antmaze-large-diverse": TaskPreset(0.05, **_ANTMAZE),
    # Exact-score 2-D bandits of this suite (validation/bandits.py); beta chosen so the
    # surrogate optimum sits between a behavior mode and the reward's maximizer.
    "bandit-ring8": TaskPreset(0.05, reward_mode="none"),
    "bandit-grid25": TaskPreset(0.05, reward_mode="none"),
    "bandit-aniso2": TaskPreset(0.05, reward_mode="none"),
    "bandit-unequal6": TaskPreset(0.05, reward_mode="none"),
}


@dataclass(frozen=True)
class Profile:
    """Budgets (steps, batch size) for the three stages, plus logging cadence."""

    behavior_steps: int
    behavior_batch: int
    critic_steps: int
    critic_batch: int
    policy_steps: int
    policy_batch: int
    log_every: int
    checkpoint_every: int


PROFILES: dict[str, Profile] = {
    # Seconds on a 2-core CPU; enough to exercise every code path.
    "smoke": Profile(500, 256, 500, 256, 500, 256, 100, 250),
    # Minutes per run on a 2-core CPU, where the paper's behavior batch (2048) runs at
    # ~7 updates/s and batch 256 at ~35/s (reports/bench/train_throughput.json).
    "default": Profile(10_000, 256, 10_000, 256, 10_000, 256, 500, 2500),
    # method §5, the public code's budgets.
    "paper": Profile(2_000_000, 2048, 1_500_000, 256, 1_000_000, 256, 1000, 20_000),
}


def make_config(
    task: str, profile: str = "default", seed: int = 0, overrides: dict[str, str] | None = None
) -> RunConfig:
    """Compose a run: task preset + profile budgets + ``section.field=value`` overrides.

    Besides the config's fields, ``policy.beta_scale=X`` multiplies beta (the task preset's,
    or ``policy.beta`` if that is set too) by X: one setting that sweeps beta across tasks.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known profiles: {', '.join(PROFILES)}")
    preset, prof = TASKS[task], PROFILES[profile]
    cfg = RunConfig(
        task=task,
        seed=seed,
        profile=profile,
        reward_mode=preset.reward_mode,
        behavior=BehaviorConfig(steps=prof.behavior_steps, batch_size=prof.behavior_batch),
        critic=CriticConfig(
            steps=prof.critic_steps, batch_size=prof.critic_batch, expectile=preset.expectile
        ),
        policy=PolicyConfig(
            steps=prof.policy_steps,
            batch_size=prof.policy_batch,
            beta=preset.beta,
            normalize_q_grad=preset.normalize_q_grad,
            hidden=preset.policy_hidden,
        ),
        log_every=prof.log_every,
        checkpoint_every=prof.checkpoint_every,
    )
    sets = dict(overrides or {})
    beta_scale = _parse(sets.pop("policy.beta_scale", "1"), float, "policy.beta_scale")
    if not beta_scale > 0:
        raise ValueError(f"policy.beta_scale must be > 0, got {beta_scale}")
    cfg = apply_overrides(cfg, sets)
    if beta_scale != 1.0:
        cfg = replace(cfg, policy=replace(cfg.policy, beta=cfg.policy.beta * beta_scale))
    return cfg


def apply_overrides(cfg: RunConfig, overrides: dict[str, str]) -> RunConfig:
    """Return ``cfg`` with dotted ``section.field`` (or top-level ``field``) set from strings.

    Values are parsed by the field's declared type, so ``policy.t_fixed=0.5``,
    ``policy.baseline=true`` and ``policy.t_range=0.1,0.9`` all work; the dataclass
    checks then run again on the result.
    """
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, raw in overrides.items():
        section, _, name = key.rpartition(".")
        if section and section not in ("behavior", "critic", "policy"):
            raise ValueError(f"unknown config section {section!r} in {key!r}; use behavior, critic or policy")
        target = getattr(cfg, section) if section else cfg
        fields = {f.name: f for f in dataclasses.fields(target)}
        if name not in fields:
            raise ValueError(f"unknown config field {key!r}; {section or 'run'} has: {', '.join(fields)}")
        hint = typing.get_type_hints(type(target))[name]
        value = _parse(raw, hint, key)
        (sections.setdefault(section, {}) if section else top)[name] = value
    for section, changes in sections.items():
        top[section] = replace(getattr(cfg, section), **changes)
    return replace(cfg, **top)


# What the non-finite refusal of a float override names as the allowed values (by field name).
_FLOAT_RANGES = {"lr": "in (0, 1]", "beta": "finite and > 0", "beta_scale": "finite and > 0"}


def _parse(raw: str, hint: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null", ""):
            if type(None) in args:
                return None
        return _parse(raw, next(a for a in args if a is not type(None)), key)
    try:
        if hint is bool:
            if raw.lower() in ("true", "1", "yes", "on"):
                return True
            if raw.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            value = float(raw)
            if not math.isfinite(value):
                allowed = _FLOAT_RANGES.get(key.rpartition(".")[2], "a finite number")
                raise ValueError(f"{key}={raw!r} refused: {key} must be {allowed}")
            return value
        if origin is tuple:
            elem = args[0]
            return tuple(_parse(x.strip(), elem, key) for x in raw.split(",") if x.strip())
        if origin is Literal:
            if raw not in args:
                raise ValueError(raw)
            return raw
        return raw
    except ValueError as exc:
        if str(exc).startswith(f"{key}="):
            raise
        raise ValueError(f"cannot parse {key}={raw!r} as {hint}") from None
