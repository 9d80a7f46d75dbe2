"""nbgrader's configuration for this course folder (classroom/): one assignment per chapter in source/.

    make assignments        # nbgrader generate_assignment --all: the student versions in build/classroom/release/

The course folder is copied to build/classroom/ before nbgrader runs there, so release/, submitted/,
autograded/ and feedback/ never land in the repository; the gradebook is a temporary sqlite file
(pass --db). See the README's "For teachers".
"""

c = get_config()  # nbgrader provides get_config

c.CourseDirectory.course_id = "diffusion_lib"
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
# the student's stub: the test cells say "not implemented yet" for it instead of a traceback
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
# a test cell may take a few seconds (the training-step check runs small networks)
c.ExecutePreprocessor.timeout = 120
