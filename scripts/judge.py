#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Judge one run of the hmm-rs test VM.

Reads the guest's kernel console and its results port (see guest-init.sh),
prints what passed and failed, writes the counts as "passed failed skipped"
to --counts, and exits non-zero on any failure. Counted as tests:
- every KUnit case, parsed from the console by the kernel's own
  tools/testing/kunit/kunit.py parse, one top-level KTAP block at a time;
- every kselftest-harness test of each user-space program (its "# Totals:");
  a program that ends without totals, or with a non-zero status that its
  totals do not explain, counts as one more failure;
- the reference: hmm-tests run against the kernel's own lib/test_hmm.ko
  ("hmm-tests@test_hmm"). Its passes count as passed; what test_hmm.ko
  itself fails in this VM is listed and counted as skipped, since it is
  not hmm-rs's failure; and one more check, parity: every test it passes
  must pass against hmm_dummy ("hmm-tests@hmm_dummy") too;
- each module load and unload, each HMMRS-CHECK the guest reports, and
  the VM finishing by itself;
- a console free of kernel bug reports (BUG, WARNING, Oops, KASAN, lockdep...),
  except between the HMMRS-REFERENCE-BEGIN/END marks of the test_hmm.ko run
  (hmm-rs is unloaded then; those reports are printed, not counted).

Exit status: 0 if all passed; 3 if the only failure is a bug report the
kernel printed while booting, before user space started (no hmm-rs code
was loaded yet: the emulated machine, not the module), which vm.sh retries
once; 1 otherwise.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

# Kernel reports that mean the kernel (or our module) is broken.
BAD_CONSOLE = re.compile(
    r'(BUG:|WARNING:|Oops|general protection fault|Kernel panic|KASAN|UBSAN|'
    r'possible recursive locking|possible circular locking|'
    r'inconsistent lock state|INFO: task .* blocked|RCU detected stall|'
    r'kernel BUG at|Call Trace:|'
    # The IOMMU caught a device using an address nothing maps (the DMAR
    # driver's fault log), or DMA-API debugging a misuse of the DMA API.
    r'DMAR: \[DMA |DMAR: DRHD: handling fault|is not mapped by the IOMMU|'
    r'DMA-API: (?!preallocated \d+ debug entries|debugging enabled by kernel config))')
# IOMMU faults provoked on purpose (tests/dma_iommu.c, between its marks).
IOMMU_FAULT = re.compile(r'DMAR: (\[DMA |DRHD: handling fault)')
TIMESTAMP = re.compile(r'^\[\s*\d+\.\d+\]\s?')
# The kernel's own warning that an allocation failed (warn_alloc), with a
# stack dump: expected while failures are injected on purpose.
ALLOC_FAILURE = re.compile(r'(page allocation failure|vmalloc error): ')
TAP_RESULT = re.compile(r'^(ok|not ok) \d+ (\S+)(.*)$')
REFERENCE, DUMMY = 'hmm-tests@test_hmm', 'hmm-tests@hmm_dummy'
TOTALS = re.compile(r'^# Totals: pass:(\d+) fail:(\d+) xfail:(\d+) xpass:(\d+) '
                    r'skip:(\d+) error:(\d+)')


class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def add(self, name, status, why=''):
        if status == 'PASS':
            self.passed += 1
        elif status == 'SKIP':
            self.skipped += 1
        else:
            self.failed += 1
            print(f'FAIL: {name}' + (f': {why}' if why else ''))


def ktap_blocks(console):
    """Top-level KTAP blocks that modules print as they load, timestamps
    removed. The blocks KUnit prints at boot (empty, or the kernel's own
    built-in suites) come before user space starts and are cut away."""
    blocks, cur, user_space = [], None, False
    for line in console:
        line = TIMESTAMP.sub('', line.rstrip('\n'))
        if line.startswith('Run /init as init process'):
            user_space = True
        if not user_space:
            continue
        if line == 'KTAP version 1':
            cur = [line]
            blocks.append(cur)
        elif cur is not None:
            cur.append(line)
    return blocks


def count_cases(node, tally, prefix=''):
    name = prefix + node.get('name', '')
    for case in node.get('test_cases', []):
        status = case.get('status', 'FAIL')
        tally.add(f"{name}.{case.get('name')}", 'PASS' if status == 'PASS'
                  else 'SKIP' if status == 'SKIPPED' else 'FAIL', status)
    for sub in node.get('sub_groups', []):
        count_cases(sub, tally, name + '/')


def judge_kunit(ksrc, console, tally):
    kunit = os.path.join(ksrc, 'tools/testing/kunit/kunit.py')
    for block in ktap_blocks(console):
        with tempfile.TemporaryDirectory() as tmp:
            src, out = os.path.join(tmp, 'ktap'), os.path.join(tmp, 'json')
            with open(src, 'w') as f:
                f.write('\n'.join(block) + '\n')
            proc = subprocess.run([sys.executable, kunit, 'parse', f'--json={out}', src],
                                  capture_output=True, text=True)
            print(proc.stdout, end='')
            if not os.path.exists(out):
                tally.add('kunit.py parse', 'FAIL', proc.stderr.strip())
                continue
            with open(out) as f:
                result = json.load(f)
            before = tally.failed
            for suite in result.get('sub_groups', []):
                count_cases(suite, tally)
            # kunit.py also fails on malformed KTAP or a crashed suite.
            if proc.returncode != 0 and tally.failed == before:
                tally.add('kunit.py parse', 'FAIL', 'KTAP did not parse cleanly')


def judge_results(results, tally):
    """Module load/unload markers and user-space programs' TAP output."""
    done = False
    prog, totals, seen = None, None, []
    by_test = {}
    for raw in results:
        line = raw.rstrip('\n')
        words = line.split()
        if prog is not None and not line.startswith('HMMRS-'):
            print(f'  {line}')
            if line.startswith('not ok '):
                print(('reference fails' if prog == REFERENCE else 'FAIL') + f': {prog}: {line}')
            m = TAP_RESULT.match(line)
            if m:
                status = 'SKIP' if '# SKIP' in m.group(3) else 'PASS' if m.group(1) == 'ok' else 'FAIL'
                by_test.setdefault(prog, {})[m.group(2)] = status
            m = TOTALS.match(line)
            if m:
                totals = [int(x) for x in m.groups()]
            continue
        if not words:
            continue
        tag = words[0]
        if tag == 'HMMRS-CHECK-PASSED':
            tally.add(words[1], 'PASS')
        elif tag == 'HMMRS-CHECK-FAILED':
            tally.add(words[1], 'FAIL')
        elif tag in ('HMMRS-LOADED', 'HMMRS-UNLOADED'):
            tally.add(f'{tag.lower()[6:]} {words[1]}', 'PASS')
        elif tag in ('HMMRS-LOAD-FAILED', 'HMMRS-UNLOAD-FAILED'):
            tally.add(f'{tag.lower()[6:]} {words[1]}', 'FAIL')
        elif tag == 'HMMRS-NOTE':
            print(line[len(tag) + 1:])
        elif tag == 'HMMRS-USER-BEGIN':
            prog, totals = words[1], None
            print(f'{prog}:')
        elif tag == 'HMMRS-USER-END':
            rc = int(words[2])
            seen.append(prog)
            if totals is None:
                tally.add(prog, 'FAIL', f'ended with status {rc} and no "# Totals:" line')
            elif prog == REFERENCE:
                p, f, xf, xp, s, e = totals
                tally.passed += p + xf
                tally.skipped += s + f + xp + e
                print(f'{prog}: pass {p + xf}, fail {f + xp + e}, skip {s} (its failures are '
                      'test_hmm.ko\'s in this VM: counted as skipped, not as hmm-rs failures)')
            else:
                p, f, xf, xp, s, e = totals
                tally.passed += p + xf
                tally.skipped += s
                tally.failed += f + xp + e
                print(f'{prog}: pass {p + xf}, fail {f + xp + e}, skip {s}')
                if rc != 0 and f + xp + e == 0:
                    tally.add(prog, 'FAIL', f'exit status {rc} with no failed test')
            prog = None
        elif tag == 'HMMRS-DONE':
            done = True
    if prog is not None:
        tally.add(prog, 'FAIL', 'did not finish')
    if REFERENCE in by_test:
        ref, ours = by_test[REFERENCE], by_test.get(DUMMY, {})
        missing = [t for t, s in ref.items() if s == 'PASS' and ours.get(t) != 'PASS']
        extra = [t for t, s in ref.items() if s != 'PASS' and ours.get(t) == 'PASS']
        print(f'parity: hmm_dummy passes {sum(s == "PASS" for s in ref.values()) - len(missing)} of '
              f'the {sum(s == "PASS" for s in ref.values())} tests test_hmm.ko passes'
              + (f', and {len(extra)} it does not: {" ".join(extra)}' if extra else ''))
        tally.add('hmm-tests parity (hmm_dummy passes all test_hmm.ko passes)',
                  'FAIL' if missing else 'PASS', ' '.join(missing))
    tally.add('VM ran to completion', 'PASS' if done else 'FAIL',
              'no HMMRS-DONE: the guest hung or crashed')
    return seen


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--ksrc')
    ap.add_argument('--mode', default='test')
    ap.add_argument('--console', required=True)
    ap.add_argument('--results')
    ap.add_argument('--counts')
    ap.add_argument('--reports-only', action='store_true',
                    help='only look for kernel bug reports on the console (benchmarks)')
    args = ap.parse_args()
    if not args.reports_only and not (args.ksrc and args.results):
        ap.error('--ksrc and --results are needed unless --reports-only')

    def lines(path):
        try:
            with open(path, errors='backslashreplace') as f:
                return f.readlines()
        except FileNotFoundError:
            return []

    console = lines(args.console)
    if args.reports_only:
        bad = [TIMESTAMP.sub('', line.rstrip()) for line in console if BAD_CONSOLE.search(line)]
        for line in bad[:10]:
            print(f'kernel report: {line}')
        sys.exit(1 if bad else 0)
    results = lines(args.results)
    tally = Tally()
    if args.mode in ('test', 'stock'):
        judge_kunit(args.ksrc, console, tally)
    judge_results(results, tally)
    bad, boot_bad, ref_bad, user_space, in_ref = [], [], [], False, False
    in_inject, alloc_dump, injected_failures = False, False, 0
    in_probe, provoked = False, 0
    for raw in console:
        line = TIMESTAMP.sub('', raw.rstrip())
        user_space = user_space or line.startswith('Run /init as init process')
        if 'HMMRS-REFERENCE-BEGIN' in line or 'HMMRS-REFERENCE-END' in line:
            in_ref = 'BEGIN' in line
        # Between these marks (guest-init's fault-injected storm), the
        # stack dump of a failed allocation's warning is what injection
        # does, not a bug: counted and shown, not failed. Anything else,
        # a WARNING: included, still fails.
        if 'HMMRS-INJECT-BEGIN' in line or 'HMMRS-INJECT-END' in line:
            in_inject = 'BEGIN' in line
        if 'HMMRS-IOMMU-PROBE-BEGIN' in line or 'HMMRS-IOMMU-PROBE-END' in line:
            in_probe = 'BEGIN' in line
        if in_probe and IOMMU_FAULT.search(line):
            provoked += 1
            continue
        if in_inject and ALLOC_FAILURE.search(line):
            alloc_dump = True
            injected_failures += 1
            continue
        if alloc_dump:
            if line.startswith('</TASK>'):
                alloc_dump = False
            if line.startswith('Call Trace:'):
                continue
        if BAD_CONSOLE.search(line):
            (ref_bad if in_ref else bad if user_space else boot_bad).append(line)
    if injected_failures:
        print(f'allocation-failure warnings while failures were injected: {injected_failures} '
              '(expected there; not counted)')
    if provoked:
        print(f'IOMMU fault reports the DMA tests provoked on purpose: {provoked} '
              '(expected there; not counted)')
    if ref_bad:
        print('kernel reports during the test_hmm.ko reference run (hmm_rs and hmm_dummy '
              'unloaded; not counted): ' + '; '.join(ref_bad[:3]))
    failed_before = tally.failed
    tally.add('kernel console free of bug reports', 'FAIL' if bad or boot_bad else 'PASS',
              '; '.join((boot_bad + bad)[:5]))
    boot_only = boot_bad and not bad and failed_before == 0
    if tally.failed:
        print(f'--- last 40 console lines ({args.console}) ---')
        print(''.join(console[-40:]), end='')
    if args.counts:
        with open(args.counts, 'w') as f:
            f.write(f'{tally.passed} {tally.failed} {tally.skipped}\n')
    print(f'vm ({args.mode}): {tally.passed} passed, {tally.failed} failed, '
          f'{tally.skipped} skipped')
    if boot_only:
        print('the only failure is a kernel report printed while booting, before '
              'user space started and before any hmm-rs code was loaded')
        sys.exit(3)
    sys.exit(1 if tally.failed else 0)


if __name__ == '__main__':
    main()
