-- Which process a send worker is, beyond its pid (pids are reused): the boot, the pid namespace
-- and the process's start time, "boot_id/pidns/starttime" (Linux /proc; NULL elsewhere). A worker
-- on this host is alive while that very process exists, however long it has not beaten (SIGSTOP,
-- a laptop lid); only a worker elsewhere is judged by its heartbeat.
ALTER TABLE send_workers ADD COLUMN process_key TEXT;
