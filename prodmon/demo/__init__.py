"""Demo data made the honest way: real payload processes wrapped by the real
reporter, posting to a running server (`python manage.py demo`).

plan.py decides what each job does, payload.py is the stand-in for an art job,
loader.py creates the campaign and runs the jobs.
"""
