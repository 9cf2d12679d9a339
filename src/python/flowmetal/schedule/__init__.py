"""Scheduling: declarations (spec), fire-time arithmetic (cron), decisions (planner),
crontab import (crontab). All pure: time is passed in, nothing here touches the store."""
