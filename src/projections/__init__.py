"""Chronicle's projections. Adding one: write its module, add it here."""

from __future__ import annotations

from projections.base import Projection
from projections.board import TaskBoard
from projections.catalog import CatalogCache, ProductCatalog
from projections.inventory import StockLevels
from projections.my_tasks import MyTasks
from projections.orders import OrderHistory
from projections.projects import ProjectCatalog
from projections.tasks import TaskList
from projections.users import UserDirectory


def all_projections() -> list[Projection]:
    return [
        UserDirectory(),
        ProjectCatalog(),
        TaskList(),
        TaskBoard(),
        MyTasks(),
        ProductCatalog(),
        CatalogCache(),
        StockLevels(),
        OrderHistory(),
    ]
