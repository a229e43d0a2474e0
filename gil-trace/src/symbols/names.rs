//! The report in the program's terms: locks named (the CPython GIL, the static object holding
//! them, or the code that uses them), the stacks the report refers to named frame by frame,
//! and verdicts that say in which code threads waited and held.
use super::{cpython, Symbols};
use crate::{
    analysis::{report::verdicts, Analysis},
    model::{
        locks::{LockKind, LockSet},
        stack::{Frame, Stack, StackKey},
        threads::ThreadStats,
    },
};

/// Names the identified locks before the analysis (every row then carries the name): the
/// CPython GIL by its place in `_PyRuntime`, any other lock in a static object by
/// `symbol+offset (module)`. Locks on the heap keep `lock 0x…` until [`finish`].
pub fn name_locks(locks: &mut LockSet, symbols: &Symbols) {
    for lock in &mut locks.locks {
        let words: Vec<u64> = lock.words.iter().map(|w| w.addr).collect();
        if let Some(gil) = cpython::recognize(symbols, lock.tgid, &words) {
            lock.name = "GIL".into();
            lock.kind = LockKind::CPythonGil {
                version: gil.version,
            };
        }
        if let Some(symbol) = symbols.data(lock.tgid, lock.addr) {
            if lock.kind == LockKind::Futex {
                lock.name = symbol.to_string();
            }
            lock.symbol = Some(symbol);
        }
    }
}

/// After the analysis: names the remaining locks by the code that waits for them, puts the
/// stacks the report refers to in its `stacks` table, and rewrites the verdicts with the code
/// each thread waited and held in.
pub fn finish(analysis: &mut Analysis, symbols: &mut Symbols) {
    let report = &mut analysis.report;
    name_python_threads(&mut report.summary.threads, symbols);
    let mut keys: Vec<StackKey> = Vec::new();
    for h in &report.handoffs {
        keys.extend(
            h.wait_stacks
                .iter()
                .chain(&h.holder_stacks)
                .chain(&h.py_wait_stacks)
                .chain(&h.py_holder_stacks)
                .map(|s| s.stack),
        );
    }
    for c in &report.convoys {
        keys.extend(c.wait_stack);
        keys.extend(c.holder_stacks.iter().map(|&(_, s)| s));
        keys.extend(c.py_wait_stack.iter().map(|s| s.stack));
        keys.extend(c.py_holder_stacks.iter().map(|s| s.stack));
    }
    for key in keys {
        if let Some(stack) = symbols.stack(key) {
            report.stacks.insert(key, stack.clone());
        }
    }
    // Each lock's own code, from its waiters' stacks; heap locks are named after it.
    let mut lock_code = Vec::new();
    for (id, lock) in analysis.locks.locks.iter_mut().enumerate() {
        let waits: Vec<(&Stack, u64)> = report.handoffs.get(id).map_or_else(Vec::new, |h| {
            h.wait_stacks
                .iter()
                .filter_map(|s| Some((report.stacks.get(&s.stack)?, s.ns)))
                .collect()
        });
        let code = LockCode::of(&waits);
        if lock.kind == LockKind::Futex && lock.symbol.is_none() {
            if let Some(entry) = code.entry() {
                lock.name = format!("lock used by {entry}");
                report.rename_lock(id, &lock.name);
            }
        }
        lock_code.push(code);
    }
    let stacks = &report.stacks;
    let convoys = &report.convoys;
    let code = |key: StackKey| {
        let stack = stacks.get(&key)?;
        // The lock of the convoy this stack is in (verdicts are per convoy).
        let lock = convoys
            .iter()
            .find(|c| c.wait_stack == Some(key) || c.holder_stacks.iter().any(|&(_, s)| s == key))
            .and_then(|c| c.lock.as_ref())
            .map(|l| l.id);
        let empty = LockCode::default();
        lock.and_then(|id| lock_code.get(id))
            .unwrap_or(&empty)
            .label(stack)
    };
    report.verdicts = verdicts(&report.convoys, &report.summary.threads, &code);
    if let Some(python) = symbols.python() {
        report
            .summary
            .warnings
            .extend(python.errors.iter().cloned());
    }
    if !symbols.available() {
        report.summary.warnings.push(
            "this trace has no code block (recorded by an older gil-trace): locks are shown by address and no code is named".into(),
        );
    }
    report
        .summary
        .warnings
        .extend(symbols.warnings().iter().cloned());
}

/// Python threads go by their `threading` names (`Thread-1 (echo)`, `MainThread`), as the
/// sampler last saw them; the kernel's name is kept beside.
fn name_python_threads(threads: &mut [ThreadStats], symbols: &Symbols) {
    let Some(python) = symbols.python() else {
        return;
    };
    for t in threads {
        let named = python
            .threads
            .iter()
            .find(|p| p.tid == t.tid && p.tgid == t.tgid)
            .filter(|p| !p.name.is_empty() && p.name != t.name);
        if let Some(p) = named {
            t.kernel_name = Some(std::mem::replace(&mut t.name, p.name.clone()));
        }
    }
}

/// The type or module a function belongs to: `a::b::T` for `a::b::T::f` and for
/// `<a::b::T as a::Trait>::f`; none for a C function.
fn owner(function: &str) -> Option<&str> {
    let path = match function.strip_prefix('<') {
        Some(rest) => rest.split(" as ").next()?.trim_end_matches('>'),
        None => function.rsplit_once("::")?.0,
    };
    Some(path).filter(|p| !p.is_empty())
}

/// A lock's own code in the program: where its waiters' stacks enter the program's code
/// (the innermost program function of each: the lock's take path), with every function of the
/// same types or modules (its release and hand-over paths too).
#[derive(Default)]
struct LockCode {
    owners: Vec<String>,
    functions: Vec<String>,
    /// The outermost function of the lock's code in each wait stack, with the wait time behind
    /// it: where the program calls into the lock.
    entries: Vec<(String, u64)>,
}

impl LockCode {
    /// From the lock's wait stacks, each with its wait time.
    fn of(waits: &[(&Stack, u64)]) -> LockCode {
        let mut code = LockCode::default();
        for (stack, _) in waits {
            let Some(innermost) = program_functions(stack).next() else {
                continue;
            };
            if let Some(o) = owner(innermost) {
                if !code.owners.iter().any(|x| x == o) {
                    code.owners.push(o.to_string());
                }
            }
            if !code.functions.iter().any(|f| f == innermost) {
                code.functions.push(innermost.to_string());
            }
        }
        for (stack, ns) in waits {
            let entry = program_functions(stack)
                .take_while(|f| code.contains(f))
                .last();
            if let Some(entry) = entry {
                match code.entries.iter_mut().find(|(f, _)| f == entry) {
                    Some((_, total)) => *total += ns,
                    None => code.entries.push((entry.to_string(), *ns)),
                }
            }
        }
        code
    }

    /// Where the program calls into the lock, for most of the wait.
    fn entry(&self) -> Option<&str> {
        self.entries
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(f, _)| f.as_str())
    }

    fn contains(&self, function: &str) -> bool {
        self.functions.iter().any(|f| f == function)
            || owner(function).is_some_and(|o| self.owners.iter().any(|own| own == o))
    }

    /// The innermost frame of the program's own code outside the lock's: where the thread
    /// waited for it, or held it.
    fn label(&self, stack: &Stack) -> Option<String> {
        stack
            .frames
            .iter()
            .filter(|f| f.is_program_code())
            .find(|f| !f.function.as_deref().is_some_and(|fun| self.contains(fun)))
            .map(Frame::label)
    }
}

/// The functions of the program's own code in a stack, innermost first.
fn program_functions(stack: &Stack) -> impl Iterator<Item = &str> {
    stack
        .frames
        .iter()
        .filter(|f| f.is_program_code())
        .filter_map(|f| f.function.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(functions: &[&str]) -> Stack {
        Stack {
            frames: functions
                .iter()
                .map(|f| Frame {
                    module: Some(
                        if f.starts_with("sys") {
                            "libc.so.6"
                        } else {
                            "app"
                        }
                        .into(),
                    ),
                    function: Some((*f).to_string()),
                    ..Frame::default()
                })
                .collect(),
            truncated: false,
        }
    }

    #[test]
    fn the_lock_code_is_what_the_waiters_share_and_labels_skip_it() {
        let echo = stack(&[
            "syscall",
            "std::sync::Condvar::wait_timeout",
            "lab::gil::Gil::take",
            "lab::echo::serve",
            "lab::run::{{closure}}",
        ]);
        let spinner = stack(&[
            "syscall",
            "lab::gil::Gil::take",
            "<lab::gil::Gil as lab::Lock>::checkpoint",
            "lab::spinner::run",
            "lab::run::{{closure}}",
        ]);
        let handover = stack(&[
            "syscall",
            "lab::gil::Switch::wait_until_taken",
            "<lab::gil::Gil as lab::Lock>::checkpoint",
            "lab::spinner::run",
        ]);
        let code = LockCode::of(&[(&echo, 50), (&spinner, 10), (&handover, 20)]);
        assert_eq!(
            code.entry(),
            Some("lab::gil::Gil::take"),
            "50 of the 80 waited there"
        );
        assert_eq!(code.label(&echo).as_deref(), Some("lab::echo::serve"));
        // The holder's side: the lock's types' other functions are its code too.
        assert_eq!(code.label(&spinner).as_deref(), Some("lab::spinner::run"));
        assert_eq!(code.label(&handover).as_deref(), Some("lab::spinner::run"));
        let releaser = stack(&["syscall", "lab::gil::Gil::drop", "lab::spinner::pi"]);
        assert_eq!(code.label(&releaser).as_deref(), Some("lab::spinner::pi"));
        assert_eq!(owner("<a::b::T as a::Tr>::f"), Some("a::b::T"));
        assert_eq!(owner("a::b::f"), Some("a::b"));
        assert_eq!(owner("take_gil"), None);
    }
}
