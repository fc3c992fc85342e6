-- JetStream partitions (infra.delivery.partitions).

-- Per partition, the position of its last published event: the relay sends it with the next one
-- (`Chronicle-Partition-Previous`), so a partition's lane can tell when it lacks an event.
ALTER TABLE relay_state ADD COLUMN partition_heads bigint[] NOT NULL DEFAULT '{}';

-- A partitioned projection keeps one checkpoint per partition (`part` 0..P-1) beside the version's
-- own (`part` -1: what a rebuild wrote, and the checkpoint of an unpartitioned projection).
ALTER TABLE projection_checkpoints ADD COLUMN part integer NOT NULL DEFAULT -1;
ALTER TABLE projection_checkpoints DROP CONSTRAINT projection_checkpoints_pkey;
ALTER TABLE projection_checkpoints ADD PRIMARY KEY (projection, version, part);

-- Which partition's lane parked an event (-1: an unpartitioned projection).
ALTER TABLE dead_letters ADD COLUMN part integer NOT NULL DEFAULT -1;
