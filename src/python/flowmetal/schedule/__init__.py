"""Scheduling: declarations (spec), fire-time arithmetic (cron), decisions (planner), crontab
import (crontab) -- all pure -- and the scheduler that keeps them in the store: reconcile, fire,
outcomes (joined in scheduler), views (--list, --dry-run), commands (pause, resume, trigger,
backfill) and the daemon's loop (daemon). Finding and loading the .star files is
flowmetal.lang.discovery."""
