"""The reliability suite: bad inputs, damaged stats files, injected faults and fuzzing."""
