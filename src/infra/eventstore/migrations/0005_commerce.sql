-- Catalog, inventory and ordering: each context reads its own schema of views ("database per
-- service"); they share nothing but events.
CREATE SCHEMA catalog_views;
CREATE SCHEMA inventory_views;
CREATE SCHEMA ordering_views;
