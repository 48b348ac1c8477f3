package conffmt

// The checks of after= and needs= that need every line of a config:
// services that are not in it, services that depend on themselves, and
// dependency cycles.

import (
	"slices"
	"strings"
)

// An edge is one dependency as written: the service named to, in the
// option key given at pos.
type edge struct {
	to  string
	key string // "after" or "needs"
	pos Pos    // the option's word
}

// A depNode is one service of a config and the dependencies it was
// written with.
type depNode struct {
	name  string
	edges []edge
}

// maxCycles is how many cycles are reported among the services of one
// strongly connected set, beyond which one error says that there are
// more: the number of cycles can grow exponentially with the number of
// services, and a few are enough to see what is wrong.
const maxCycles = 32

// edges returns the dependencies of s as written, given that its after=
// and needs= options (either may be nil) were given at after and needs,
// and s.After holds only the after= names yet: a name in both is an edge
// of after=.
func edges(s *Service, after, needs *word) []edge {
	var es []edge
	for _, name := range s.After {
		es = append(es, edge{to: name, key: "after", pos: after.pos})
	}
	for _, name := range s.Needs {
		if !slices.Contains(s.After, name) {
			es = append(es, edge{to: name, key: "needs", pos: needs.pos})
		}
	}
	return es
}

// checkDeps reports the problems of the dependencies of nodes, every
// service of a config in file order: a service that is not in the config
// (unless p.alone says that the others are not known), a service that
// depends on itself, and every dependency cycle, once each. A cycle is
// reported at the option that makes its first edge, starting from its
// service that comes first in the file, so the order is fixed.
func (p *parser) checkDeps(nodes []depNode) {
	index := make(map[string]int, len(nodes))
	names := make([]string, len(nodes))
	for i, n := range nodes {
		index[n.name], names[i] = i, n.name
	}
	g := make(graph, len(nodes))
	for i, n := range nodes {
		for _, e := range n.edges {
			j, known := index[e.to]
			switch {
			case e.to == n.name:
				p.errorf(e.pos, "service %q names itself in %s: a service cannot depend on itself", n.name, e.key)
			case known:
				g[i] = append(g[i], arc{to: j, pos: e.pos})
			case p.alone:
			case suggest(e.to, names) != "":
				p.errorf(e.pos, "unknown service %q in %s (did you mean %q?)", e.to, e.key, suggest(e.to, names))
			default:
				p.errorf(e.pos, "unknown service %q in %s (want a service of this config)", e.to, e.key)
			}
		}
	}
	g.cycles(func(cycle []int) {
		path := make([]string, 0, len(cycle)+1)
		for _, v := range cycle {
			path = append(path, names[v])
		}
		path = append(path, names[cycle[0]])
		p.errorf(g.arc(cycle[0], cycle[1]).pos, "dependency cycle: %s", strings.Join(path, " -> "))
	}, func(set []int, first []int) {
		among := make([]string, len(set))
		for i, v := range set {
			among[i] = names[v]
		}
		p.errorf(g.arc(first[0], first[1]).pos, "more dependency cycles among %s: only the first %d are reported", strings.Join(among, ", "), maxCycles)
	})
}

// An arc of a graph: to the node to, written at pos.
type arc struct {
	to  int
	pos Pos
}

// A graph of services by their place in the file: the arcs of each, in
// the order they were written, at most one from a node to another and
// none to itself.
type graph [][]arc

// arc returns the arc from v to w, which must exist.
func (g graph) arc(v, w int) arc {
	i := slices.IndexFunc(g[v], func(a arc) bool { return a.to == w })
	return g[v][i]
}

// cycles calls found with every elementary cycle of g once, as its nodes
// from its least one, by Johnson's algorithm ("Finding all the elementary
// circuits of a directed graph", 1975), in a fixed order. After
// maxCycles cycles among one strongly connected set, it calls more with
// the set, in order, and the first cycle found in it, and goes on with
// the next set: its time is bounded by the number of cycles it reports.
func (g graph) cycles(found func(cycle []int), more func(set, first []int)) {
	rev := make(graph, len(g))
	for v, arcs := range g {
		for _, a := range arcs {
			rev[a.to] = append(rev[a.to], arc{to: v})
		}
	}
	for _, set := range g.components() {
		inSet := make([]bool, len(g))
		for _, w := range set {
			inSet[w] = true
		}
		var first []int
		n := 0
		for _, start := range set {
			// The cycles through start that go only through later nodes
			// of the set; the earlier ones had theirs found already. There
			// are none without an arc to such a node and one from one.
			later := func(a arc) bool { return inSet[a.to] && a.to > start }
			if !slices.ContainsFunc(g[start], later) || !slices.ContainsFunc(rev[start], later) {
				continue
			}
			sub := g.component(rev, start, func(w int) bool { return inSet[w] && w >= start })
			if len(sub) < 2 {
				continue
			}
			stopped := g.circuits(start, sub, func(cycle []int) bool {
				if n++; n > maxCycles {
					return false
				}
				if first == nil {
					first = slices.Clone(cycle)
				}
				found(cycle)
				return true
			})
			if stopped {
				more(set, first)
				break
			}
		}
	}
}

// components returns the strongly connected sets of g that have more than
// one node, each in order, in the order of their least nodes, by Tarjan's
// algorithm: in time linear in the size of g, so that a large config
// without cycles is checked quickly.
func (g graph) components() [][]int {
	index := make([]int, len(g)) // order of the visit from 1; 0: not visited
	low := make([]int, len(g))   // least index reached from the node's subtree
	onStack := make([]bool, len(g))
	var stack []int
	var sets [][]int
	next := 1
	var visit func(v int)
	visit = func(v int) {
		index[v], low[v] = next, next
		next++
		stack = append(stack, v)
		onStack[v] = true
		for _, a := range g[v] {
			switch w := a.to; {
			case index[w] == 0:
				visit(w)
				low[v] = min(low[v], low[w])
			case onStack[w]:
				low[v] = min(low[v], index[w])
			}
		}
		if low[v] != index[v] {
			return
		}
		i := slices.Index(stack, v)
		set := slices.Clone(stack[i:])
		stack = stack[:i]
		for _, w := range set {
			onStack[w] = false
		}
		if len(set) > 1 {
			slices.Sort(set)
			sets = append(sets, set)
		}
	}
	for v := range g {
		if index[v] == 0 {
			visit(v)
		}
	}
	slices.SortFunc(sets, func(a, b []int) int { return a[0] - b[0] })
	return sets
}

// component returns, in order, the nodes for which in is true that are on
// a cycle with v through such nodes: those reachable from v whence v is
// reachable. rev is g with its arcs reversed; v must be in.
func (g graph) component(rev graph, v int, in func(int) bool) []int {
	forward := g.reach(v, in)
	backward := rev.reach(v, in)
	var set []int
	for w := range g {
		if forward[w] && backward[w] {
			set = append(set, w)
		}
	}
	return set
}

// reach returns the nodes for which in is true that v reaches through
// such nodes, v included.
func (g graph) reach(v int, in func(int) bool) []bool {
	seen := make([]bool, len(g))
	seen[v] = true
	stack := []int{v}
	for len(stack) > 0 {
		w := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, a := range g[w] {
			if !seen[a.to] && in(a.to) {
				seen[a.to] = true
				stack = append(stack, a.to)
			}
		}
	}
	return seen
}

// circuits calls found with each elementary cycle from start through the
// nodes of set, the strongly connected set of start in the graph of its
// nodes, until found returns false; it says whether that happened.
func (g graph) circuits(start int, set []int, found func(cycle []int) bool) (stopped bool) {
	c := &circuitSearch{
		g: g, start: start, found: found,
		in:      make([]bool, len(g)),
		blocked: make([]bool, len(g)),
		b:       make([][]int, len(g)),
	}
	for _, v := range set {
		c.in[v] = true
	}
	c.circuit(start)
	return c.stopped
}

// circuitSearch is the state of Johnson's CIRCUIT procedure from start.
type circuitSearch struct {
	g       graph
	start   int
	found   func(cycle []int) bool
	in      []bool  // the nodes the search may go through
	blocked []bool  // nodes that cannot lead back to start without going through the stack
	b       [][]int // b[w]: the blocked nodes to unblock when w is
	stack   []int   // the path from start
	stopped bool    // found returned false
}

// circuit finds the cycles that go on from the stack through v, and says
// whether there was one.
func (c *circuitSearch) circuit(v int) bool {
	closed := false
	c.stack = append(c.stack, v)
	c.blocked[v] = true
	for _, a := range c.g[v] {
		switch w := a.to; {
		case c.stopped:
			return closed
		case !c.in[w]:
		case w == c.start:
			closed = true
			c.stopped = !c.found(c.stack)
		case !c.blocked[w]:
			if c.circuit(w) {
				closed = true
			}
		}
	}
	if closed {
		c.unblock(v)
	} else {
		for _, a := range c.g[v] {
			if c.in[a.to] && !slices.Contains(c.b[a.to], v) {
				c.b[a.to] = append(c.b[a.to], v)
			}
		}
	}
	c.stack = c.stack[:len(c.stack)-1]
	return closed
}

// unblock unblocks v and the nodes that wait for it, transitively.
func (c *circuitSearch) unblock(v int) {
	c.blocked[v] = false
	waiting := c.b[v]
	c.b[v] = nil
	for _, w := range waiting {
		if c.blocked[w] {
			c.unblock(w)
		}
	}
}
