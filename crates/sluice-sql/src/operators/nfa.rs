//! The automaton behind `MATCH_RECOGNIZE`, built and run as Flink's CEP library does for SQL,
//! so that a pattern finds the rows Flink finds.
//!
//! **Building.** A pattern is a sequence of variables, each with a quantifier; consecutive rows
//! must match consecutive elements (SQL's strict contiguity). The automaton is built backwards
//! from the final state, one state per row an element may take: `B{2,4}` is two mandatory states
//! and two optional ones, `B+` a first state and a looping one. A state has *take* transitions
//! (the row is mapped to the state's variable, if the variable's `DEFINE` condition holds) and
//! *proceed* transitions (move on without taking the row). A greedy quantifier (the default,
//! except for `?` and `{n}`) adds to every transition of the following state the condition
//! that the row does *not* match the quantified variable, so a row the loop could take is never
//! left to what follows.
//!
//! **Running.** Every partial match is a state and a path of (variable, row) taken so far; a
//! fresh partial match in the start state is always there, so that a match may begin at any
//! row. Each row advances every partial match along all the transitions whose conditions hold
//! (the branches are kept side by side, not backtracked); a partial match that takes a row
//! into a state from which proceed transitions reach the final state is a complete match.
//! Paths share their prefixes (a node per taken row points to the node before it), and a row
//! is stored once however many paths hold it, so long or branching patterns cost one node per
//! branch and row, not a copy of every path.
//!
//! **After a match.** Complete matches are emitted in the order of their first row, but a
//! match waits while a partial match that started earlier is still alive (it could still end
//! in a match that comes first). Emitting a match discards, per `AFTER MATCH SKIP`, the partial
//! and waiting matches that start too early: `PAST LAST ROW` those starting at or before its
//! last row, `TO NEXT ROW` those starting at or before its first row, `TO FIRST v` / `TO LAST v`
//! those starting before the first / last row mapped to `v`. With `WITHIN`, a partial match
//! whose first row is that long before the current time is dropped.

use sluice_common::{Result, SluiceError};

/// A pattern variable, as an index into the pattern's variables.
pub type Var = usize;

/// A row's place in its partition: event time, then arrival (Flink's `EventId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventId {
    pub ts: i64,
    pub seq: u64,
}

/// One element of a pattern: a variable with its quantifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    pub var: Var,
    /// The fewest rows (0: optional).
    pub min: u32,
    /// The most rows; `None`: unbounded.
    pub max: Option<u32>,
    /// Greedy (the default) or reluctant (`*?`, `+?`, `{n,m}?`).
    pub greedy: bool,
}

/// `AFTER MATCH SKIP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    PastLastRow,
    ToNextRow,
    ToFirst(Var),
    ToLast(Var),
}

#[derive(Debug, Clone)]
struct Transition {
    take: bool,
    target: usize,
    /// The variable whose condition must hold (a take's own variable); `None`: always.
    cond: Option<Var>,
    /// Variables whose conditions must not hold (greedy quantifiers before).
    not: Vec<Var>,
}

#[derive(Debug, Clone)]
struct StateDef {
    /// The variable the state's take transitions map rows to.
    var: Option<Var>,
    transitions: Vec<Transition>,
}

/// The final state is always state 0.
const FINAL: usize = 0;
const NONE: u32 = u32::MAX;

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Program {
    states: Vec<StateDef>,
    start: usize,
    pub skip: Skip,
    /// `WITHIN`: how long after its first row a match must end, in ms.
    pub within: Option<i64>,
}

impl Program {
    /// Builds the automaton of `elements` (Flink's `NFACompiler`, for SQL's patterns).
    pub fn compile(elements: &[Element], skip: Skip, within: Option<i64>) -> Program {
        let mut p = Program {
            states: vec![StateDef {
                var: None,
                transitions: Vec::new(),
            }],
            start: FINAL,
            skip,
            within,
        };
        let mut sink = FINAL;
        for e in elements.iter().rev() {
            sink = p.convert(e, sink);
        }
        p.start = sink;
        p
    }

    fn state(&mut self, var: Var) -> usize {
        self.states.push(StateDef {
            var: Some(var),
            transitions: Vec::new(),
        });
        self.states.len() - 1
    }

    fn add(&mut self, from: usize, take: bool, target: usize, cond: Option<Var>) {
        self.states[from].transitions.push(Transition {
            take,
            target,
            cond,
            not: Vec::new(),
        });
    }

    /// A greedy quantifier of `var` before `state`: none of `state`'s transitions may be
    /// followed with a row `var` could take.
    fn greedy_before(&mut self, state: usize, var: Var) {
        for t in &mut self.states[state].transitions {
            t.not.push(var);
        }
    }

    fn convert(&mut self, e: &Element, sink: usize) -> usize {
        let optional = e.min == 0;
        match e.max {
            None => {
                let looping = self.state(e.var);
                self.add(looping, false, sink, None);
                if e.greedy {
                    self.greedy_before(sink, e.var);
                }
                self.add(looping, true, looping, Some(e.var));
                let n = e.min.max(1);
                self.times(e.var, looping, sink, n, n, optional, false)
            }
            Some(1) => self.single(e.var, sink, Some(sink), optional),
            Some(max) => self.times(e.var, sink, sink, e.min.max(1), max, optional, e.greedy),
        }
    }

    /// `from` to `to` states of `var` in a row before `sink`; the optional ones may proceed
    /// to `proceed`.
    #[allow(clippy::too_many_arguments)]
    fn times(
        &mut self,
        var: Var,
        sink: usize,
        proceed: usize,
        from: u32,
        to: u32,
        optional: bool,
        greedy: bool,
    ) -> usize {
        if greedy && from != to {
            self.greedy_before(sink, var);
        }
        let mut last = sink;
        for _ in from..to {
            last = self.single(var, last, Some(proceed), true);
        }
        for _ in 1..from {
            last = self.single(var, last, None, false);
        }
        self.single(var, last, Some(proceed), optional)
    }

    fn single(&mut self, var: Var, sink: usize, proceed: Option<usize>, optional: bool) -> usize {
        let s = self.state(var);
        self.add(s, true, sink, Some(var));
        if optional {
            if let Some(p) = proceed {
                self.add(s, false, p, None);
            }
        }
        s
    }
}

/// Whether the rows of a match can be told apart by the path so far: what a condition sees.
pub struct PathView<'a, R> {
    nfa: &'a Nfa<R>,
    node: u32,
}

impl<R> PathView<'_, R> {
    /// The path's last node: equal for the same path.
    pub fn id(&self) -> u32 {
        self.node
    }

    /// The rows mapped to `var` (`None`: all rows), in order, as indexes for [`Nfa::row`].
    pub fn rows(&self, var: Option<Var>) -> Vec<u32> {
        let mut out = Vec::new();
        let mut n = self.node;
        while n != NONE {
            let node = &self.nfa.nodes[n as usize];
            if var.is_none_or(|v| v == node.var) {
                out.push(node.event);
            }
            n = node.prev;
        }
        out.reverse();
        out
    }
}

/// Evaluates `DEFINE` conditions.
pub trait Conditions<R> {
    /// Whether `var`'s condition holds for row `event` taken after `path`.
    fn holds(&mut self, var: Var, path: &PathView<'_, R>, nfa: &Nfa<R>, event: u32)
        -> Result<bool>;
}

#[derive(Debug, Clone, Copy)]
struct Node {
    var: Var,
    event: u32,
    prev: u32,
}

#[derive(Debug, Clone, Copy)]
struct Partial {
    state: usize,
    /// The last node of its path (`NONE`: nothing taken yet, the start state).
    node: u32,
    start: Option<EventId>,
}

/// A complete match: the rows mapped to each variable, in order, and the time it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub rows: Vec<(Var, u32)>,
    pub time: i64,
}

/// The partial matches of one partition and the rows they hold.
#[derive(Debug, Clone)]
pub struct Nfa<R> {
    events: Vec<(EventId, R)>,
    nodes: Vec<Node>,
    partials: Vec<Partial>,
    /// Complete matches waiting for an earlier partial match to end.
    held: Vec<Partial>,
    next_seq: u64,
    /// How many rows there were after the last compaction.
    compacted: usize,
}

impl<R> Nfa<R> {
    pub fn new(program: &Program) -> Self {
        Nfa {
            events: Vec::new(),
            nodes: Vec::new(),
            partials: vec![Partial {
                state: program.start,
                node: NONE,
                start: None,
            }],
            held: Vec::new(),
            next_seq: 0,
            compacted: 0,
        }
    }

    /// A row held by a path.
    pub fn row(&self, event: u32) -> &R {
        &self.events[event as usize].1
    }

    /// The event time of a row held by a path.
    pub fn time(&self, event: u32) -> i64 {
        self.events[event as usize].0.ts
    }

    /// Whether nothing is under way (only the start state is left).
    pub fn is_idle(&self) -> bool {
        self.held.is_empty() && self.partials.iter().all(|p| p.node == NONE)
    }

    /// How many partial matches are alive (the start state included).
    pub fn partial_matches(&self) -> usize {
        self.partials.len()
    }

    /// Time moves to `time`: partial matches older than `WITHIN` are dropped, and matches
    /// they held back are emitted.
    pub fn advance_time(&mut self, program: &Program, time: i64) -> Result<Vec<Match>> {
        let mut partials = Vec::with_capacity(self.partials.len());
        for p in std::mem::take(&mut self.partials) {
            let timed_out = program
                .within
                .is_some_and(|w| p.start.is_some_and(|s| time.saturating_sub(s.ts) >= w));
            if !timed_out {
                heap::offer(&mut partials, p);
            }
        }
        self.partials = partials;
        self.release(program, Vec::new(), time)
    }

    /// Feeds the next row (in event-time order) to every partial match; returns the
    /// matches it completes or releases.
    pub fn process(
        &mut self,
        program: &Program,
        row: R,
        ts: i64,
        conditions: &mut impl Conditions<R>,
    ) -> Result<Vec<Match>> {
        let id = EventId {
            ts,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.events.push((id, row));
        let event = (self.events.len() - 1) as u32;
        // As Flink: the partial matches in the order of their heap's array, each one's next
        // states offered to the new heaps in the order the transitions give them.
        let mut partials = Vec::new();
        let mut complete = Vec::new();
        for cs in std::mem::take(&mut self.partials) {
            let mut next = Vec::new();
            self.next_states(program, cs, id, event, conditions, &mut next)?;
            for p in next {
                if p.state == FINAL {
                    heap::offer(&mut complete, p);
                } else {
                    heap::offer(&mut partials, p);
                }
            }
        }
        self.partials = partials;
        self.release(program, complete, ts)
    }

    fn condition(
        &self,
        t: &Transition,
        node: u32,
        event: u32,
        conditions: &mut impl Conditions<R>,
    ) -> Result<bool> {
        let view = PathView { nfa: self, node };
        if let Some(v) = t.cond {
            if !conditions.holds(v, &view, self, event)? {
                return Ok(false);
            }
        }
        for &v in &t.not {
            if conditions.holds(v, &view, self, event)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    #[allow(clippy::too_many_arguments)]
    fn next_states(
        &mut self,
        program: &Program,
        cs: Partial,
        id: EventId,
        event: u32,
        conditions: &mut impl Conditions<R>,
        out: &mut Vec<Partial>,
    ) -> Result<()> {
        // The takes reachable through proceed transitions.
        let mut takes = Vec::new();
        let mut stack = vec![cs.state];
        while let Some(s) = stack.pop() {
            for t in &program.states[s].transitions {
                if self.condition(t, cs.node, event, conditions)? {
                    if t.take {
                        takes.push((s, t.target));
                    } else {
                        stack.push(t.target);
                    }
                }
            }
        }
        for (source, target) in takes {
            let var = program.states[source].var.ok_or_else(|| {
                SluiceError::Runtime("MATCH_RECOGNIZE: a take from the final state".into())
            })?;
            self.nodes.push(Node {
                var,
                event,
                prev: cs.node,
            });
            let node = (self.nodes.len() - 1) as u32;
            let start = cs.start.or(Some(id));
            let next = Partial {
                state: target,
                node,
                start,
            };
            out.push(next);
            if target == FINAL {
                continue;
            }
            if self.reaches_final(program, target, cs.node, event, conditions)? {
                out.push(Partial {
                    state: FINAL,
                    ..next
                });
            }
        }
        if cs.node == NONE && cs.start.is_none() {
            out.push(cs);
        }
        Ok(())
    }

    /// Whether proceed transitions lead from `state` to the final state for this row
    /// (conditions seen from the path before the row, as Flink evaluates them).
    fn reaches_final(
        &self,
        program: &Program,
        state: usize,
        node: u32,
        event: u32,
        conditions: &mut impl Conditions<R>,
    ) -> Result<bool> {
        let mut stack = vec![state];
        while let Some(s) = stack.pop() {
            for t in &program.states[s].transitions {
                if !t.take && self.condition(t, node, event, conditions)? {
                    if t.target == FINAL {
                        return Ok(true);
                    }
                    stack.push(t.target);
                }
            }
        }
        Ok(false)
    }

    fn path(&self, node: u32) -> Vec<(Var, u32)> {
        let view = PathView { nfa: self, node };
        let mut rows = Vec::new();
        let mut n = view.node;
        while n != NONE {
            let nd = &self.nodes[n as usize];
            rows.push((nd.var, nd.event));
            n = nd.prev;
        }
        rows.reverse();
        rows
    }

    /// Emits the complete matches no earlier partial match holds back, pruning after each.
    fn release(
        &mut self,
        program: &Program,
        complete: Vec<Partial>,
        time: i64,
    ) -> Result<Vec<Match>> {
        // Flink's completed matches are a heap too; the potential ones join it in their
        // heap's array order.
        for p in complete {
            heap::offer(&mut self.held, p);
        }
        let mut out = Vec::new();
        while let Some(earliest) = self.held.first().copied() {
            // Wait for a partial match that started earlier (the start state sorts last).
            if self
                .partials
                .first()
                .is_some_and(|p| heap::key(&earliest) > heap::key(p))
            {
                break;
            }
            heap::poll(&mut self.held);
            let rows = self.path(earliest.node);
            let first = |v: Var| rows.iter().find(|(x, _)| *x == v).map(|(_, e)| *e);
            let last = |v: Var| rows.iter().rev().find(|(x, _)| *x == v).map(|(_, e)| *e);
            let missing = |v: Var| {
                SluiceError::Runtime(format!(
                    "MATCH_RECOGNIZE: AFTER MATCH SKIP TO a variable that has no row in a match (variable #{v}); Flink fails the job the same way"
                ))
            };
            let id = |e: u32| self.events[e as usize].0;
            let (pruning, inclusive) = match program.skip {
                Skip::PastLastRow => (rows.last().map(|(_, e)| id(*e)), true),
                Skip::ToNextRow => (rows.first().map(|(_, e)| id(*e)), true),
                Skip::ToFirst(v) => (Some(id(first(v).ok_or_else(|| missing(v))?)), false),
                Skip::ToLast(v) => (Some(id(last(v).ok_or_else(|| missing(v))?)), false),
            };
            let first_row = rows.first().map(|(_, e)| id(*e));
            if matches!(program.skip, Skip::ToFirst(_) | Skip::ToLast(_)) && pruning == first_row {
                // Flink refuses to go round in circles.
                return Err(SluiceError::Runtime(
                    "MATCH_RECOGNIZE: could not skip to the first row of a match (AFTER MATCH SKIP TO a variable that starts the match); Flink fails the job the same way".into(),
                ));
            }
            if let Some(pruning) = pruning {
                let prune = |p: &Partial| {
                    p.start
                        .is_some_and(|s| if inclusive { s <= pruning } else { s < pruning })
                };
                heap::remove_if(&mut self.partials, prune);
                heap::remove_if(&mut self.held, prune);
            }
            out.push(Match { rows, time });
        }
        Ok(out)
    }

    /// The nodes and rows the live paths reach, renumbered in order.
    fn live(&self) -> Live {
        let mut node_map = vec![NONE; self.nodes.len()];
        let mut event_map = vec![NONE; self.events.len()];
        let mut nodes: Vec<Node> = Vec::new();
        let mut events: Vec<u32> = Vec::new();
        let mut order: Vec<u32> = Vec::new();
        for p in self.partials.iter().chain(self.held.iter()) {
            let mut n = p.node;
            while n != NONE && node_map[n as usize] == NONE {
                node_map[n as usize] = 0;
                order.push(n);
                n = self.nodes[n as usize].prev;
            }
        }
        order.sort_unstable();
        for (i, &n) in order.iter().enumerate() {
            node_map[n as usize] = i as u32;
        }
        for &n in &order {
            let node = self.nodes[n as usize];
            let e = node.event as usize;
            if event_map[e] == NONE {
                event_map[e] = events.len() as u32;
                events.push(node.event);
            }
            nodes.push(Node {
                var: node.var,
                event: event_map[e],
                prev: if node.prev == NONE {
                    NONE
                } else {
                    node_map[node.prev as usize]
                },
            });
        }
        Live {
            node_map,
            nodes,
            events,
        }
    }

    /// Drops the nodes and rows no live path reaches any more, once they are most of them.
    pub fn compact_if_sparse(&mut self) {
        if self.events.len() < 64 || self.events.len() < 2 * self.compacted {
            return;
        }
        let live = self.live();
        let mut old: Vec<Option<(EventId, R)>> = std::mem::take(&mut self.events)
            .into_iter()
            .map(Some)
            .collect();
        self.events = live
            .events
            .iter()
            .filter_map(|&e| old[e as usize].take())
            .collect();
        self.nodes = live.nodes;
        for p in self.partials.iter_mut().chain(self.held.iter_mut()) {
            if p.node != NONE {
                p.node = live.node_map[p.node as usize];
            }
        }
        self.compacted = self.events.len();
    }

    /// Writes the partial and held matches and the rows they hold; `rows` encodes the rows.
    pub fn encode(
        &self,
        out: &mut Vec<u8>,
        rows: impl FnOnce(&[&R]) -> Result<Vec<Vec<u8>>>,
    ) -> Result<()> {
        let Live {
            node_map,
            nodes,
            events: kept_events,
        } = self.live();
        let refs: Vec<&R> = kept_events
            .iter()
            .map(|&e| &self.events[e as usize].1)
            .collect();
        let encoded = rows(&refs)?;
        put_u64(out, self.next_seq);
        put_u64(out, kept_events.len() as u64);
        for (&e, bytes) in kept_events.iter().zip(encoded) {
            let id = self.events[e as usize].0;
            put_u64(out, id.ts as u64);
            put_u64(out, id.seq);
            put_u64(out, bytes.len() as u64);
            out.extend_from_slice(&bytes);
        }
        put_u64(out, nodes.len() as u64);
        for n in &nodes {
            put_u64(out, n.var as u64);
            put_u64(out, n.event as u64);
            put_u64(out, n.prev as u64);
        }
        for list in [&self.partials, &self.held] {
            put_u64(out, list.len() as u64);
            for p in list.iter() {
                put_u64(out, p.state as u64);
                put_u64(
                    out,
                    if p.node == NONE {
                        NONE as u64
                    } else {
                        node_map[p.node as usize] as u64
                    },
                );
                match p.start {
                    Some(s) => {
                        out.push(1);
                        put_u64(out, s.ts as u64);
                        put_u64(out, s.seq);
                    }
                    None => out.push(0),
                }
            }
        }
        Ok(())
    }

    /// Reads what [`Nfa::encode`] wrote; `rows` decodes the rows.
    pub fn decode(
        program: &Program,
        bytes: &[u8],
        rows: impl FnOnce(&[&[u8]]) -> Result<Vec<R>>,
    ) -> Result<Self> {
        let mut r = Reader { bytes, pos: 0 };
        let next_seq = r.u64()?;
        let n_events = r.u64()? as usize;
        let mut ids = Vec::with_capacity(n_events);
        let mut raw = Vec::with_capacity(n_events);
        for _ in 0..n_events {
            let ts = r.u64()? as i64;
            let seq = r.u64()?;
            let len = r.u64()? as usize;
            ids.push(EventId { ts, seq });
            raw.push(r.take(len)?);
        }
        let decoded = rows(&raw)?;
        if decoded.len() != n_events {
            return Err(corrupt());
        }
        let events: Vec<(EventId, R)> = ids.into_iter().zip(decoded).collect();
        let n_nodes = r.u64()? as usize;
        let mut nodes = Vec::with_capacity(n_nodes);
        for _ in 0..n_nodes {
            let var = r.u64()? as usize;
            let event = r.u64()? as u32;
            let prev = r.u64()? as u32;
            if event as usize >= events.len() || (prev != NONE && prev as usize >= n_nodes) {
                return Err(corrupt());
            }
            nodes.push(Node { var, event, prev });
        }
        let mut lists = [Vec::new(), Vec::new()];
        for list in lists.iter_mut() {
            let n = r.u64()? as usize;
            for _ in 0..n {
                let state = r.u64()? as usize;
                let node = r.u64()? as u32;
                let start = match r.byte()? {
                    1 => Some(EventId {
                        ts: r.u64()? as i64,
                        seq: r.u64()?,
                    }),
                    _ => None,
                };
                if state >= program.states.len() || (node != NONE && node as usize >= n_nodes) {
                    return Err(corrupt());
                }
                list.push(Partial { state, node, start });
            }
        }
        let [partials, held] = lists;
        Ok(Nfa {
            compacted: events.len(),
            events,
            nodes,
            partials,
            held,
            next_seq,
        })
    }
}

/// `java.util.PriorityQueue`'s binary heap, operation for operation: Flink keeps the partial
/// and the complete matches in such heaps, ordered by their first row, and which of two
/// matches with the same first row comes first is the order of the heap's array, which
/// depends on the exact sequence of offers, polls and removals.
mod heap {
    use super::{EventId, Partial};
    use std::cmp::Ordering;

    /// The order: by first row, the start state (no row yet) last.
    pub(super) fn key(p: &Partial) -> EventId {
        p.start.unwrap_or(EventId {
            ts: i64::MAX,
            seq: u64::MAX,
        })
    }

    fn cmp(a: &Partial, b: &Partial) -> Ordering {
        key(a).cmp(&key(b))
    }

    pub(super) fn offer(q: &mut Vec<Partial>, x: Partial) {
        let mut k = q.len();
        q.push(x);
        while k > 0 {
            let parent = (k - 1) / 2;
            if cmp(&x, &q[parent]) != Ordering::Less {
                break;
            }
            q[k] = q[parent];
            k = parent;
        }
        q[k] = x;
    }

    pub(super) fn poll(q: &mut Vec<Partial>) -> Option<Partial> {
        let first = *q.first()?;
        let last = q.pop()?;
        if !q.is_empty() {
            sift_down(q, 0, last);
        }
        Some(first)
    }

    fn sift_down(q: &mut [Partial], mut k: usize, x: Partial) {
        let n = q.len();
        let half = n / 2;
        while k < half {
            let mut child = 2 * k + 1;
            let right = child + 1;
            if right < n && cmp(&q[child], &q[right]) == Ordering::Greater {
                child = right;
            }
            if cmp(&x, &q[child]) != Ordering::Greater {
                break;
            }
            q[k] = q[child];
            k = child;
        }
        q[k] = x;
    }

    /// `removeAll`/`removeIf`: the survivors keep their order, then the array is heapified
    /// (untouched when nothing is removed).
    pub(super) fn remove_if(q: &mut Vec<Partial>, remove: impl Fn(&Partial) -> bool) {
        if !q.iter().any(&remove) {
            return;
        }
        q.retain(|p| !remove(p));
        let n = q.len();
        for i in (0..n / 2).rev() {
            let x = q[i];
            sift_down(q, i, x);
        }
    }
}

/// What the live paths reach: old node index to new, the kept nodes, the kept rows' old indexes.
struct Live {
    node_map: Vec<u32>,
    nodes: Vec<Node>,
    events: Vec<u32>,
}

fn corrupt() -> SluiceError {
    SluiceError::Runtime("MATCH_RECOGNIZE: corrupt partial-match state".into())
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(corrupt)?;
        let s = self.bytes.get(self.pos..end).ok_or_else(corrupt)?;
        self.pos = end;
        Ok(s)
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows are letters; variable `v` holds for a row when the row's letter set contains the
    /// variable's letter ('a' + v).
    struct Letters;

    impl Conditions<&'static str> for Letters {
        fn holds(
            &mut self,
            var: Var,
            _path: &PathView<'_, &'static str>,
            nfa: &Nfa<&'static str>,
            event: u32,
        ) -> Result<bool> {
            let letter = (b'a' + var as u8) as char;
            Ok(nfa.row(event).contains(letter))
        }
    }

    fn el(var: Var, min: u32, max: Option<u32>, greedy: bool) -> Element {
        Element {
            var,
            min,
            max,
            greedy,
        }
    }

    /// Runs rows through a pattern; each match as the letters of its variables and row indexes.
    fn run(elements: &[Element], skip: Skip, rows: &[&'static str]) -> Vec<String> {
        let p = Program::compile(elements, skip, None);
        let mut nfa = Nfa::new(&p);
        let mut out = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            for m in nfa.process(&p, *r, i as i64, &mut Letters).unwrap() {
                out.push(
                    m.rows
                        .iter()
                        .map(|(v, e)| format!("{}{}", (b'a' + *v as u8) as char, e))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
        }
        out
    }

    #[test]
    fn concatenation_is_strictly_contiguous() {
        let pattern = [el(0, 1, Some(1), true), el(1, 1, Some(1), true)];
        assert_eq!(
            run(
                &pattern,
                Skip::PastLastRow,
                &["a", "b", "a", "x", "b", "a", "b"]
            ),
            vec!["a0 b1", "a5 b6"]
        );
    }

    #[test]
    fn greedy_loop_keeps_rows_the_next_variable_could_take() {
        // A B+ C with rows that are both B and C: greedy B takes them all.
        let pattern = [
            el(0, 1, Some(1), true),
            el(1, 1, None, true),
            el(2, 1, Some(1), true),
        ];
        assert_eq!(
            run(&pattern, Skip::PastLastRow, &["a", "b", "bc", "c"]),
            vec!["a0 b1 b2 c3"]
        );
        // Reluctant B+?: the first row C can take ends the match.
        let reluctant = [
            el(0, 1, Some(1), true),
            el(1, 1, None, false),
            el(2, 1, Some(1), true),
        ];
        assert_eq!(
            run(&reluctant, Skip::PastLastRow, &["a", "b", "bc", "c"]),
            vec!["a0 b1 c2"]
        );
    }

    #[test]
    fn skip_to_next_row_finds_overlapping_matches() {
        let pattern = [el(0, 3, Some(3), true)];
        assert_eq!(
            run(&pattern, Skip::ToNextRow, &["a", "a", "a", "a", "x", "a"]),
            vec!["a0 a1 a2", "a1 a2 a3"]
        );
        assert_eq!(
            run(&pattern, Skip::PastLastRow, &["a", "a", "a", "a", "a", "a"]),
            vec!["a0 a1 a2", "a3 a4 a5"]
        );
    }

    #[test]
    fn optional_and_ranges() {
        // A B? C: both with and without B.
        let pattern = [
            el(0, 1, Some(1), true),
            el(1, 0, Some(1), true),
            el(2, 1, Some(1), true),
        ];
        assert_eq!(
            run(&pattern, Skip::ToNextRow, &["a", "c", "a", "b", "c"]),
            vec!["a0 c1", "a2 b3 c4"]
        );
        // A B{2,3} C greedy.
        let range = [
            el(0, 1, Some(1), true),
            el(1, 2, Some(3), true),
            el(2, 1, Some(1), true),
        ];
        assert_eq!(
            run(
                &range,
                Skip::PastLastRow,
                &["a", "b", "c", "a", "b", "b", "b", "c"]
            ),
            vec!["a3 b4 b5 b6 c7"]
        );
    }

    #[test]
    fn an_earlier_partial_match_holds_a_later_match_back() {
        // A B* C reluctant... with a long first candidate: "a a b c": the match starting at
        // row 1 completes first but waits for the one from row 0, which fails at row 1.
        let pattern = [el(0, 1, None, true), el(1, 1, Some(1), true)];
        // A+ B greedy, rows a a b: one match a0 a1 b2 (the one from a1 is pruned by PAST LAST ROW).
        assert_eq!(
            run(&pattern, Skip::PastLastRow, &["a", "a", "b"]),
            vec!["a0 a1 b2"]
        );
        assert_eq!(
            run(&pattern, Skip::ToNextRow, &["a", "a", "b"]),
            vec!["a0 a1 b2", "a1 b2"]
        );
    }

    #[test]
    fn within_drops_old_partial_matches() {
        let pattern = [el(0, 1, Some(1), true), el(1, 1, Some(1), true)];
        let p = Program::compile(&pattern, Skip::PastLastRow, Some(5));
        let mut nfa = Nfa::new(&p);
        assert!(nfa.process(&p, "a", 0, &mut Letters).unwrap().is_empty());
        assert!(nfa.advance_time(&p, 5).unwrap().is_empty());
        assert!(nfa.is_idle());
        assert!(nfa.process(&p, "b", 5, &mut Letters).unwrap().is_empty());
    }

    #[test]
    fn state_survives_encoding() {
        let pattern = [
            el(0, 1, Some(1), true),
            el(1, 1, None, true),
            el(2, 1, Some(1), true),
        ];
        let p = Program::compile(&pattern, Skip::PastLastRow, None);
        let mut nfa: Nfa<String> = Nfa::new(&p);
        struct Owned;
        impl Conditions<String> for Owned {
            fn holds(
                &mut self,
                var: Var,
                _p: &PathView<'_, String>,
                nfa: &Nfa<String>,
                e: u32,
            ) -> Result<bool> {
                Ok(nfa.row(e).contains((b'a' + var as u8) as char))
            }
        }
        for (i, r) in ["x", "a", "b", "b"].iter().enumerate() {
            nfa.process(&p, r.to_string(), i as i64, &mut Owned)
                .unwrap();
        }
        let mut bytes = Vec::new();
        nfa.encode(&mut bytes, |rows| {
            Ok(rows.iter().map(|r| r.as_bytes().to_vec()).collect())
        })
        .unwrap();
        let mut back: Nfa<String> = Nfa::decode(&p, &bytes, |rows| {
            Ok(rows
                .iter()
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect())
        })
        .unwrap();
        let m = back.process(&p, "c".to_string(), 4, &mut Owned).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[0].rows.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            vec![0, 1, 1, 2]
        );
        assert!(Nfa::<String>::decode(&p, &bytes[..bytes.len() - 3], |_| Ok(Vec::new())).is_err());
    }
}
