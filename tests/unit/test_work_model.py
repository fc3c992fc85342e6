"""Random command sequences against simple models of a project and of a task: the aggregate
accepts exactly what the model accepts, ends in the same state, and replays to that state."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from eventsourcing.application import project_aggregate
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from domain.errors import DomainError
from domain.work import Priority, Project, Task

PEOPLE = [uuid.UUID(int=i) for i in range(1, 5)]
OWNER = PEOPLE[0]
titles = st.text(alphabet="abc xyz", min_size=0, max_size=8)
dates = st.one_of(st.none(), st.dates(date(2026, 1, 1), date(2027, 12, 31)))


@dataclass
class ProjectModel:
    name: str = "P"
    members: set[uuid.UUID] = field(default_factory=lambda: {OWNER})
    archived: bool = False


@dataclass
class TaskModel:
    title: str = "T"
    priority: str = "normal"
    due_date: date | None = None
    status: str = "todo"
    assignee: uuid.UUID | None = None


class WorkMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.project = Project.create("P", None, OWNER)
        self.task = Task.create(self.project, "T", None, None, None, OWNER)
        self.pm, self.tm = ProjectModel(), TaskModel()
        self.history: dict[str, list[Any]] = {
            "project": list(self.project.collect_events()),
            "task": list(self.task.collect_events()),
        }

    def attempt(self, allowed: bool, command: Any) -> bool:
        """Runs the command; the aggregate must accept it exactly when the model does."""
        try:
            command()
        except DomainError:
            assert not allowed, "the aggregate refused what the model accepts"
            self.history["project"] += self.project.collect_events()
            self.history["task"] += self.task.collect_events()
            return False
        assert allowed, "the aggregate accepted what the model refuses"
        self.history["project"] += self.project.collect_events()
        self.history["task"] += self.task.collect_events()
        return True

    # project commands

    @rule(name=titles)
    def rename(self, name: str) -> None:
        clean = " ".join(name.split())
        if self.attempt(not self.pm.archived and bool(clean), lambda: self.project.rename(name)):
            self.pm.name = clean

    @rule()
    def archive(self) -> None:
        if self.attempt(not self.pm.archived, self.project.archive):
            self.pm.archived = True

    @rule(who=st.sampled_from(PEOPLE))
    def add_member(self, who: uuid.UUID) -> None:
        if self.attempt(not self.pm.archived and who not in self.pm.members, lambda: self.project.add_member(who)):
            self.pm.members.add(who)

    @rule(who=st.sampled_from(PEOPLE))
    def remove_member(self, who: uuid.UUID) -> None:
        ok = not self.pm.archived and who != OWNER and who in self.pm.members
        if self.attempt(ok, lambda: self.project.remove_member(who)):
            self.pm.members.discard(who)

    # task commands

    @rule(
        title=st.one_of(st.none(), titles),
        priority=st.one_of(st.none(), st.sampled_from([*Priority, "asap"])),
        due=st.one_of(st.just("keep"), dates),
    )
    def edit(self, title: str | None, priority: str | None, due: Any) -> None:
        changes: dict[str, Any] = {}
        if title is not None:
            changes["title"] = title
        if priority is not None:
            changes["priority"] = priority
        if due != "keep":
            changes["due_date"] = due
        ok = not self.pm.archived and (title is None or bool(" ".join(title.split()))) and priority != "asap"
        if self.attempt(ok, lambda: self.task.edit(self.project, **changes)):
            if title is not None:
                self.tm.title = " ".join(title.split())
            if priority is not None:
                self.tm.priority = priority
            if due != "keep":
                self.tm.due_date = due

    @rule(who=st.sampled_from(PEOPLE))
    def assign(self, who: uuid.UUID) -> None:
        ok = not self.pm.archived and who in self.pm.members and self.tm.assignee != who
        if self.attempt(ok, lambda: self.task.assign(self.project, who)):
            self.tm.assignee = who

    @rule()
    def unassign(self) -> None:
        if self.attempt(
            not self.pm.archived and self.tm.assignee is not None, lambda: self.task.unassign(self.project)
        ):
            self.tm.assignee = None

    @rule()
    def start(self) -> None:
        if self.attempt(not self.pm.archived and self.tm.status == "todo", lambda: self.task.start(self.project)):
            self.tm.status = "in_progress"

    @rule()
    def complete(self) -> None:
        if self.attempt(not self.pm.archived and self.tm.status != "done", lambda: self.task.complete(self.project)):
            self.tm.status = "done"

    @rule()
    def reopen(self) -> None:
        if self.attempt(not self.pm.archived and self.tm.status == "done", lambda: self.task.reopen(self.project)):
            self.tm.status = "todo"

    @invariant()
    def same_state_as_the_model(self) -> None:
        p, t = self.project, self.task
        assert (p.name, p.members, p.archived) == (self.pm.name, self.pm.members, self.pm.archived)
        assert (t.title, t.priority.value, t.due_date, t.status.value, t.assignee_id) == (
            self.tm.title,
            self.tm.priority,
            self.tm.due_date,
            self.tm.status,
            self.tm.assignee,
        )

    @invariant()
    def replaying_the_events_gives_the_same_state(self) -> None:
        assert vars(project_aggregate(None, self.history["project"])) == vars(self.project)
        assert vars(project_aggregate(None, self.history["task"])) == vars(self.task)


TestWorkAgainstModel = WorkMachine.TestCase
TestWorkAgainstModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
