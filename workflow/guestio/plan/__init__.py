"""What a run of the workflow makes, as data: the files of every build and run, each stage's
conditions, and the measurement tables and figures drawn from them.

The rule files read one :class:`Plan`, made once from the checked config before any rule is
defined, so no rule file depends on another having been included first.

* :mod:`guestio.plan.plan`: the Plan (builds, images, run files, exit runs);
* :mod:`guestio.plan.stages`: each stage's conditions (timer, disk modifications, network, Fig 6);
* :mod:`guestio.plan.tables`: the measurement tables and the figures each is drawn from.
"""

from guestio.plan.plan import Plan

__all__ = ["Plan"]
