"""The only place that reads wall time. Tests and the scheduler inject their own clock."""

import time


class SystemClock:
    def now(self):
        return time.time()

    def now_ns(self):
        return time.time_ns()

    def sleep(self, seconds):
        time.sleep(seconds)


SYSTEM = SystemClock()
