package kafkax

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/IBM/sarama"
)

// Member is what a service instance advertises in its consumer group
// metadata, so that every other instance can find the owner of a partition
// and send it requests. Kafka is the only membership service.
type Member struct {
	// ID names the instance, e.g. "query-svc-0". It is stable across
	// restarts when the instance runs with static membership.
	ID string `json:"id"`
	// URL is the base URL other instances use to reach it.
	URL string `json:"url"`
}

// memberMagic starts every UserData that carries a Member.
var memberMagic = []byte("PRF1")

// wrapUserData prefixes a strategy's own user data with m.
func wrapUserData(m Member, inner []byte) []byte {
	j, _ := json.Marshal(m)
	out := make([]byte, 0, len(memberMagic)+4+len(j)+len(inner))
	out = append(out, memberMagic...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(j)))
	out = append(out, j...)
	return append(out, inner...)
}

// unwrapUserData splits user data written by wrapUserData. Data without the
// prefix (a member of another version) yields a zero Member and the data
// unchanged.
func unwrapUserData(b []byte) (Member, []byte, error) {
	if !bytes.HasPrefix(b, memberMagic) {
		return Member{}, b, nil
	}
	rest := b[len(memberMagic):]
	if len(rest) < 4 {
		return Member{}, nil, errors.New("truncated member user data")
	}
	n := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	if uint32(len(rest)) < n {
		return Member{}, nil, errors.New("truncated member user data")
	}
	var m Member
	if err := json.Unmarshal(rest[:n], &m); err != nil {
		return Member{}, nil, fmt.Errorf("member user data: %w", err)
	}
	inner := rest[n:]
	if len(inner) == 0 {
		inner = nil
	}
	return m, inner, nil
}

// memberStrategy wraps a balance strategy for two purposes:
//
//   - It carries each instance's Member in the group metadata. sarama's
//     sticky strategy stores its own state in the member UserData (and
//     overwrites Consumer.Group.Member.UserData with it after the first
//     assignment), so the Member travels as a prefix of whatever the inner
//     strategy writes.
//   - It co-partitions: the inner strategy plans the primary topic only,
//     and every other subscribed topic gets the same partition numbers, so
//     the owner of partition p of the primary topic owns partition p of all
//     of them (the way Kafka Streams co-partitions a task's inputs).
type memberStrategy struct {
	inner   sarama.BalanceStrategy
	self    Member
	primary string
	prefer  func(p int32, members []string) []string // GroupOptions.Prefer

	mu      sync.Mutex
	members map[string]Member // by group member id, learned in Plan (leader only)
}

func newMemberStrategy(inner sarama.BalanceStrategy, self Member, primary string, prefer func(int32, []string) []string) *memberStrategy {
	return &memberStrategy{inner: inner, self: self, primary: primary, prefer: prefer, members: map[string]Member{}}
}

func (s *memberStrategy) Name() string { return s.inner.Name() }

func (s *memberStrategy) Plan(members map[string]sarama.ConsumerGroupMemberMetadata, topics map[string][]int32) (sarama.BalanceStrategyPlan, error) {
	innerMembers := make(map[string]sarama.ConsumerGroupMemberMetadata, len(members))
	learned := make(map[string]Member, len(members))
	for id, meta := range members {
		m, inner, err := unwrapUserData(meta.UserData)
		if err != nil {
			return nil, err
		}
		learned[id] = m
		meta.UserData = inner
		meta.Topics = []string{s.primary}
		innerMembers[id] = meta
	}
	s.mu.Lock()
	s.members = learned
	s.mu.Unlock()

	plan, err := s.inner.Plan(innerMembers, map[string][]int32{s.primary: topics[s.primary]})
	if err != nil {
		return nil, err
	}
	if s.prefer != nil {
		preferPlan(plan, s.primary, learned, s.prefer)
	}
	return mirrorPlan(plan, s.primary, topics), nil
}

// preferPlan moves partitions of the primary topic to the members that
// prefer names for them (see GroupOptions.Prefer). First by swapping two
// partitions between their members: p, which another member got, with a
// partition q of p's preferred member that has a preference of its own,
// not for that member, so that every member keeps as many partitions as
// the sticky plan gave it. Then, for what no swap placed, by moving p to
// its first preferred member. A partition without a preference never
// moves: it stays where the sticky plan put it, usually with its owner.
func preferPlan(plan sarama.BalanceStrategyPlan, primary string, members map[string]Member, prefer func(int32, []string) []string) {
	ids := make([]string, 0, len(members))
	byInstance := make(map[string]string, len(members)) // instance id -> group member id
	for gid, m := range members {
		if m.ID != "" {
			ids = append(ids, m.ID)
			byInstance[m.ID] = gid
		}
	}
	sort.Strings(ids)
	owner := map[int32]string{} // partition -> group member id
	var parts []int32
	for gid, topics := range plan {
		for _, p := range topics[primary] {
			owner[p] = gid
			parts = append(parts, p)
		}
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	want := map[int32][]string{} // partition -> preferred group member ids
	for _, p := range parts {
		for _, id := range prefer(p, ids) {
			if gid, ok := byInstance[id]; ok {
				want[p] = append(want[p], gid)
			}
		}
	}
	wants := func(p int32, gid string) bool {
		for _, w := range want[p] {
			if w == gid {
				return true
			}
		}
		return false
	}
	if len(want) == 0 {
		return
	}
	swaps, moves := 0, 0
	defer func() {
		slog.Info("rebalance plan: partitions whose owner left go to members that kept them warm",
			"partitions", len(want), "swapped", swaps, "moved", moves)
	}()
	for _, p := range parts {
		if len(want[p]) == 0 || wants(p, owner[p]) {
			continue
		}
		for _, target := range want[p] {
			from := owner[p]
			swapped := false
			for _, q := range plan[target][primary] {
				if len(want[q]) > 0 && !wants(q, target) {
					replace(plan[target][primary], q, p)
					replace(plan[from][primary], p, q)
					owner[p], owner[q] = target, from
					swapped = true
					swaps++
					break
				}
			}
			if swapped {
				break
			}
		}
	}
	// What no swap could place moves all the same: a partition read from
	// the start is unavailable for as long as that takes, while an
	// uneven count only costs some load until the next rebalance evens it
	// out (Kafka Streams' high-availability assignor makes the same
	// choice, KIP-441).
	for _, p := range parts {
		if len(want[p]) == 0 || wants(p, owner[p]) {
			continue
		}
		from, target := owner[p], want[p][0]
		plan[from][primary] = remove(plan[from][primary], p)
		if plan[target] == nil {
			plan[target] = map[string][]int32{}
		}
		plan[target][primary] = append(plan[target][primary], p)
		owner[p] = target
		moves++
	}
	for _, topics := range plan {
		sort.Slice(topics[primary], func(i, j int) bool { return topics[primary][i] < topics[primary][j] })
	}
}

// remove returns parts without p.
func remove(parts []int32, p int32) []int32 {
	out := parts[:0]
	for _, q := range parts {
		if q != p {
			out = append(out, q)
		}
	}
	return out
}

// replace puts new where old is in parts.
func replace(parts []int32, old, new int32) {
	for i, p := range parts {
		if p == old {
			parts[i] = new
			return
		}
	}
}

// mirrorPlan gives every member the partitions of each secondary topic that
// have the numbers of its primary partitions.
func mirrorPlan(plan sarama.BalanceStrategyPlan, primary string, topics map[string][]int32) sarama.BalanceStrategyPlan {
	for _, assigned := range plan {
		for topic, parts := range topics {
			if topic == primary {
				continue
			}
			have := map[int32]bool{}
			for _, p := range parts {
				have[p] = true
			}
			for _, p := range assigned[primary] {
				if have[p] {
					assigned[topic] = append(assigned[topic], p)
				}
			}
		}
	}
	return plan
}

func (s *memberStrategy) AssignmentData(memberID string, topics map[string][]int32, generationID int32) ([]byte, error) {
	inner, err := s.inner.AssignmentData(memberID, map[string][]int32{s.primary: topics[s.primary]}, generationID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	m := s.members[memberID]
	s.mu.Unlock()
	return wrapUserData(m, inner), nil
}

// Assignment is one instance's view of a consumer group: who is in it and
// which partitions of the primary topic each member owns.
type Assignment struct {
	// State is the group state, e.g. "Stable" or "PreparingRebalance".
	State string `json:"state"`
	// Members are sorted by ID.
	Members []MemberAssignment `json:"members"`
	owners  map[int32]Member
}

// MemberAssignment is one member and its partitions of the primary topic.
type MemberAssignment struct {
	Member
	GroupMemberID string  `json:"groupMemberId"`
	Partitions    []int32 `json:"partitions"`
}

// Owner returns the member that owns partition p, if the group is stable
// and someone owns it.
func (a Assignment) Owner(p int32) (Member, bool) {
	m, ok := a.owners[p]
	return m, ok && a.State == "Stable"
}

// describeAssignment builds the Assignment of group from the broker's
// DescribeGroups answer.
func describeAssignment(admin sarama.ClusterAdmin, group, primary string) (Assignment, error) {
	descs, err := admin.DescribeConsumerGroups([]string{group})
	if err != nil {
		return Assignment{}, err
	}
	if len(descs) != 1 {
		return Assignment{}, fmt.Errorf("describe group %s: %d answers", group, len(descs))
	}
	if !errors.Is(descs[0].Err, sarama.ErrNoError) {
		return Assignment{}, fmt.Errorf("describe group %s: %w", group, descs[0].Err)
	}
	return assignmentOf(descs[0], primary)
}

func assignmentOf(d *sarama.GroupDescription, primary string) (Assignment, error) {
	a := Assignment{State: d.State, owners: map[int32]Member{}}
	for id, md := range d.Members {
		ma := MemberAssignment{GroupMemberID: id}
		if meta, err := md.GetMemberMetadata(); err == nil && meta != nil {
			ma.Member, _, _ = unwrapUserData(meta.UserData)
		}
		if asg, err := md.GetMemberAssignment(); err == nil && asg != nil {
			ma.Partitions = append(ma.Partitions, asg.Topics[primary]...)
			// The assignment's UserData is what the member sends at its next
			// join; it carries the Member as well, and is newer.
			if m, _, err := unwrapUserData(asg.UserData); err == nil && m.ID != "" {
				ma.Member = m
			}
		}
		sort.Slice(ma.Partitions, func(i, j int) bool { return ma.Partitions[i] < ma.Partitions[j] })
		for _, p := range ma.Partitions {
			a.owners[p] = ma.Member
		}
		a.Members = append(a.Members, ma)
	}
	sort.Slice(a.Members, func(i, j int) bool { return a.Members[i].ID < a.Members[j].ID })
	return a, nil
}
