"""The student copies are nbgrader's release: their test cells fail until a student solves them, so nbval
does not run them. tests/test_classroom.py autogrades them (untouched: zero points, without crashing)."""

collect_ignore_glob = ["*.ipynb"]
