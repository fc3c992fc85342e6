"""Chronicle's projections. Adding one: write its module, add it here."""

from __future__ import annotations

from projections.base import Projection
from projections.board import TaskBoard
from projections.my_tasks import MyTasks
from projections.projects import ProjectCatalog
from projections.tasks import TaskList
from projections.users import UserDirectory


def all_projections() -> list[Projection]:
    return [UserDirectory(), ProjectCatalog(), TaskList(), TaskBoard(), MyTasks()]
