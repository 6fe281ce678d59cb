"""course_tools: what the course needs around the learner's library, kept out of ``course_lib``.

- ``build`` -- execute the course to an offline HTML site, write student handouts, the README's course map
- ``bench`` -- where benchmark results are written (bench/results/, README tables) and read back
"""
