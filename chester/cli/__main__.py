from chester.cli import run

run()
