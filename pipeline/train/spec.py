"""What one ``fit`` trains by: the optimiser and schedule, the batch, the seed and how the epochs run.

The teacher, distill and QAT stages build a ``FitSpec`` from their config section
(``FitSpec.for_stage``); a teacher-side phase (AMA's adaptive module, MHKD's heads) builds one with
its own fixed settings. Either way one loop, ``pipeline.train.loop.fit``, trains.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.train.data import Augment

Position = tuple[int, int]  # (view, batch number) of a step in ``fit``'s replayed views


@dataclass(frozen=True)
class Schedule:
    """Optimiser and learning-rate schedule: the keys of a config section's ``ScheduleConfig``."""

    epochs: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    schedule: str  # cosine | step | constant
    milestones: tuple[int, ...] = ()  # for schedule: step, epochs at which lr ×= gamma
    gamma: float = 0.1

    @classmethod
    def of(cls, section) -> Schedule:
        """A teacher/distill/qat section's schedule."""
        return cls(epochs=section.epochs, lr=section.lr, optimizer=section.optimizer, momentum=section.momentum,
                   weight_decay=section.weight_decay, schedule=section.schedule, milestones=tuple(section.milestones),
                   gamma=section.gamma)


@dataclass(frozen=True)
class FitSpec:
    """One training run of ``fit``: everything it needs besides the modules, the step, the data and the callbacks."""

    schedule: Schedule
    batch_size: int  # the global batch (split among the ranks under torchrun)
    seed: int  # the shuffle, the augmentation and, with ``seeds_global_rng``, torch's global RNG
    desc: str  # progress bar and epoch lines
    augment: Augment | None = None  # per batch on the CPU (in-memory data)
    precision: str | None = None  # overrides train.precision (a stage that must stay fp32)
    # fewer than the epochs: epoch e replays view e mod views (same shards, order, augmentation), and the
    # step is told its position in the view, so it may reuse what it computed there (distill's teacher_reuse)
    views: int | None = None
    # False: torch's global RNG is left as the caller has it (a teacher-side phase seeds what it draws
    # itself: its initialisation and its shuffle come from the method's own seed)
    seeds_global_rng: bool = True
    epoch_lines: bool = True  # one console line per epoch (a teacher-side phase prints none)

    @classmethod
    def for_stage(cls, section, data_cfg, augment: Augment | None, desc: str, *, seed: int | None = None,
                  views: int | None = None) -> FitSpec:
        """A training stage's run: its section's schedule, the data section's global batch and seed
        (distill trains once per seed of its own), the data's augmentation."""
        return cls(Schedule.of(section), batch_size=data_cfg.batch_size, seed=data_cfg.seed if seed is None else seed,
                   desc=desc, augment=augment, views=views)
