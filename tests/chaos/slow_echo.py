"""An exec agent for the chaos tests: answers with the user's own text
after a delay (argv[1] seconds), so that messages are still waiting when
the worker is restarted or killed."""
import json
import sys
import time

req = json.loads(sys.stdin.readline())
time.sleep(float(sys.argv[1]))
sys.stdout.write(req["text"])
