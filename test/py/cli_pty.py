"""Runs a command on a pseudo-terminal, answering its prompts (test/cli.test.ts).

One JSON request on stdin: {"argv": [...], "answers": ["...", ...], "timeout": s}.
Each answer is typed (with Enter) when the output ends with a prompt (": ").
Prints {"status": exit status, "output": everything the terminal showed}.
"""
import json
import os
import pty
import select
import sys
import time


def main():
    req = json.load(sys.stdin)
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(req['argv'][0], req['argv'])
    answers = list(req.get('answers', []))
    out = b''
    deadline = time.time() + req.get('timeout', 60)
    while time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if answers and out.rstrip(b' ').endswith(b':'):
                os.write(fd, answers.pop(0).encode() + b'\r')
    _, status = os.waitpid(pid, 0)
    print(json.dumps({'status': os.waitstatus_to_exitcode(status), 'output': out.decode('utf-8', 'replace')}))


if __name__ == '__main__':
    main()
