package bus

import "strings"

// FilterIndex maps topic filters to values and finds every value whose
// filter matches a topic name, in time that grows with the topic's depth,
// not with the number of filters. Bus implementations use it to route.
//
// Filters are stored as given to Add: pass the filter without a $share
// prefix. The zero value is not usable; call NewFilterIndex. A FilterIndex
// is not safe for concurrent use: callers hold their own lock.
type FilterIndex[V comparable] struct {
	root *indexNode[V]
	n    int
}

type indexNode[V comparable] struct {
	children map[string]*indexNode[V]
	plus     *indexNode[V]
	hash     []V // values of filters ending in "#" at this node
	values   []V // values of filters ending exactly here
}

// NewFilterIndex returns an empty index.
func NewFilterIndex[V comparable]() *FilterIndex[V] {
	return &FilterIndex[V]{root: &indexNode[V]{}}
}

// Len returns the number of (filter, value) entries.
func (x *FilterIndex[V]) Len() int { return x.n }

// Add stores v under filter. The same pair may be added twice; it then
// matches twice.
func (x *FilterIndex[V]) Add(filter string, v V) {
	n := x.root
	for level := range strings.SplitSeq(filter, "/") {
		switch level {
		case "#":
			n.hash = append(n.hash, v)
			x.n++
			return
		case "+":
			if n.plus == nil {
				n.plus = &indexNode[V]{}
			}
			n = n.plus
		default:
			c := n.children[level]
			if c == nil {
				if n.children == nil {
					n.children = make(map[string]*indexNode[V])
				}
				c = &indexNode[V]{}
				n.children[level] = c
			}
			n = c
		}
	}
	n.values = append(n.values, v)
	x.n++
}

// Remove deletes one (filter, v) entry and reports whether it was there.
func (x *FilterIndex[V]) Remove(filter string, v V) bool {
	levels := strings.Split(filter, "/")
	removed := x.remove(x.root, levels, v)
	if removed {
		x.n--
	}
	return removed
}

func (x *FilterIndex[V]) remove(n *indexNode[V], levels []string, v V) bool {
	if len(levels) == 0 {
		return removeValue(&n.values, v)
	}
	level := levels[0]
	if level == "#" && len(levels) == 1 {
		return removeValue(&n.hash, v)
	}
	var child *indexNode[V]
	if level == "+" {
		child = n.plus
	} else {
		child = n.children[level]
	}
	if child == nil || !x.remove(child, levels[1:], v) {
		return false
	}
	if child.empty() {
		if level == "+" {
			n.plus = nil
		} else {
			delete(n.children, level)
		}
	}
	return true
}

func (n *indexNode[V]) empty() bool {
	return len(n.children) == 0 && n.plus == nil && len(n.hash) == 0 && len(n.values) == 0
}

func removeValue[V comparable](s *[]V, v V) bool {
	for i, e := range *s {
		if e == v {
			*s = append((*s)[:i], (*s)[i+1:]...)
			return true
		}
	}
	return false
}

// Match calls fn for every value whose filter matches topic. A topic that
// starts with '$' is not matched by filters that start with a wildcard.
func (x *FilterIndex[V]) Match(topic string, fn func(V)) {
	dollar := topic != "" && topic[0] == '$'
	x.match(x.root, topic, dollar, fn)
}

func (x *FilterIndex[V]) match(n *indexNode[V], rest string, noWildcards bool, fn func(V)) {
	if !noWildcards {
		// '#' matches this level and everything under it. noWildcards is
		// set at the root for a $-topic.
		for _, v := range n.hash {
			fn(v)
		}
	}
	end := strings.IndexByte(rest, '/')
	level, next, last := rest, "", true
	if end >= 0 {
		level, next, last = rest[:end], rest[end+1:], false
	}
	if c := n.children[level]; c != nil {
		x.visit(c, next, last, fn)
	}
	if n.plus != nil && !noWildcards {
		x.visit(n.plus, next, last, fn)
	}
}

// visit continues the match at child c after a level was consumed.
func (x *FilterIndex[V]) visit(c *indexNode[V], next string, last bool, fn func(V)) {
	if last {
		for _, v := range c.values {
			fn(v)
		}
		// "a/#" matches "a".
		for _, v := range c.hash {
			fn(v)
		}
		return
	}
	x.match(c, next, false, fn)
}
