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

// memberData is what a member's group metadata carries besides the
// balance strategy's own user data.
type memberData struct {
	Member
	// Held is the next offset of every partition of the primary topic
	// whose state the member holds, as of its join (GroupOptions.Held).
	// It travels only in a join's metadata, never in an assignment.
	Held map[int32]int64 `json:"held,omitempty"`
}

// memberMagic starts every UserData that carries a Member.
var memberMagic = []byte("PRF1")

// wrapUserData prefixes a strategy's own user data with m.
func wrapUserData(m memberData, inner []byte) []byte {
	j, _ := json.Marshal(m)
	out := make([]byte, 0, len(memberMagic)+4+len(j)+len(inner))
	out = append(out, memberMagic...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(j)))
	out = append(out, j...)
	return append(out, inner...)
}

// unwrapUserData splits user data written by wrapUserData. Data without the
// prefix (a member of another version) yields a zero memberData and the
// data unchanged.
func unwrapUserData(b []byte) (memberData, []byte, error) {
	if !bytes.HasPrefix(b, memberMagic) {
		return memberData{}, b, nil
	}
	rest := b[len(memberMagic):]
	if len(rest) < 4 {
		return memberData{}, nil, errors.New("truncated member user data")
	}
	n := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	if uint32(len(rest)) < n {
		return memberData{}, nil, errors.New("truncated member user data")
	}
	var m memberData
	if err := json.Unmarshal(rest[:n], &m); err != nil {
		return memberData{}, nil, fmt.Errorf("member user data: %w", err)
	}
	inner := rest[n:]
	if len(inner) == 0 {
		inner = nil
	}
	return m, inner, nil
}

// memberStrategy wraps a balance strategy for three purposes:
//
//   - It carries each instance's Member in the group metadata. sarama's
//     sticky strategy keeps its own state in the member UserData (the
//     leader writes it into each assignment, and the member sends it back
//     at its next join), so the Member travels as a prefix of whatever the
//     inner strategy writes.
//   - It co-partitions: the inner strategy plans the primary topic only,
//     and every other subscribed topic gets the same partition numbers, so
//     the owner of partition p of the primary topic owns partition p of all
//     of them (the way Kafka Streams co-partitions a task's inputs).
//   - It places partitions where their state is: with GroupOptions.Held,
//     every join says how far the member's store holds each partition,
//     and the plan swaps partitions towards the members with the least
//     left to read (see heldPlan); with GroupOptions.Prefer, a left
//     member's partitions go to the members that kept them warm.
//
// sarama calls SubscriptionUserData before every join and OnAssignment
// after every sync, from the group's own goroutine; Plan and
// AssignmentData run on the leader. All are safe for concurrent use.
type memberStrategy struct {
	inner   sarama.BalanceStrategy
	self    Member
	primary string
	prefer  func(p int32, members []string) []string // GroupOptions.Prefer
	held    func() (map[int32]int64, error)          // GroupOptions.Held

	mu      sync.Mutex
	members map[string]Member // by group member id, learned in Plan (leader only)
	// last is the inner strategy's user data of this member's last
	// assignment, which its next join sends back.
	last []byte
}

func newMemberStrategy(inner sarama.BalanceStrategy, opts GroupOptions) *memberStrategy {
	return &memberStrategy{inner: inner, self: opts.Self, primary: opts.Topics[0], prefer: opts.Prefer, held: opts.Held, members: map[string]Member{}}
}

func (s *memberStrategy) Name() string { return s.inner.Name() }

// SubscriptionUserData is this member's user data for its next join: its
// Member, the offsets its store holds now, and the inner strategy's data
// of its last assignment.
func (s *memberStrategy) SubscriptionUserData([]string) ([]byte, error) {
	d := memberData{Member: s.self}
	if s.held != nil {
		held, err := s.held()
		if err != nil {
			// Joining without them only costs the placement by state.
			slog.Warn("cannot read the offsets the store holds; joining without them", "err", err)
		}
		d.Held = held
	}
	s.mu.Lock()
	last := s.last
	s.mu.Unlock()
	return wrapUserData(d, last), nil
}

// OnAssignment keeps the inner strategy's data of the assignment received,
// for the next join.
func (s *memberStrategy) OnAssignment(asg *sarama.ConsumerGroupMemberAssignment, _ int32) {
	_, inner, err := unwrapUserData(asg.UserData)
	if err != nil {
		inner = nil
	}
	s.mu.Lock()
	s.last = inner
	s.mu.Unlock()
}

func (s *memberStrategy) Plan(members map[string]sarama.ConsumerGroupMemberMetadata, topics map[string][]int32) (sarama.BalanceStrategyPlan, error) {
	innerMembers := make(map[string]sarama.ConsumerGroupMemberMetadata, len(members))
	learned := make(map[string]Member, len(members))
	held := make(map[string]map[int32]int64, len(members))
	for id, meta := range members {
		m, inner, err := unwrapUserData(meta.UserData)
		if err != nil {
			return nil, err
		}
		learned[id] = m.Member
		if len(m.Held) > 0 {
			held[id] = m.Held
		}
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
	if len(held) > 0 {
		heldPlan(plan, s.primary, held)
	}
	return mirrorPlan(plan, s.primary, topics), nil
}

// heldPlan swaps partitions of the primary topic between members, two at
// a time, while a swap lowers the number of records that the new owners
// have to read before they serve: for member m and partition p that is
// the highest offset any member holds of p minus m's own (all of it when
// m holds nothing of p). Every member keeps as many partitions as the
// plan gave it, and a swap that gains nothing is not made, so a partition
// moves only towards a member that is further along in it. A member that
// restarts after its partitions went elsewhere thus gets back those its
// store holds, and reads their tails, instead of other partitions from
// their start.
func heldPlan(plan sarama.BalanceStrategyPlan, primary string, held map[string]map[int32]int64) {
	best := map[int32]int64{}
	for _, offs := range held {
		for p, off := range offs {
			best[p] = max(best[p], off)
		}
	}
	cost := func(p int32, gid string) int64 { return best[p] - held[gid][p] }
	owner, parts := owners(plan, primary)
	swaps := 0
	// Each swap lowers a sum of non-negative integers, so this ends; the
	// bound only caps the work of a pathological plan.
	for round := 0; round < len(parts); round++ {
		swapped := false
		for i, p := range parts {
			for _, q := range parts[i+1:] {
				a, b := owner[p], owner[q]
				if a == b || cost(p, b)+cost(q, a) >= cost(p, a)+cost(q, b) {
					continue
				}
				replace(plan[a][primary], p, q)
				replace(plan[b][primary], q, p)
				owner[p], owner[q] = b, a
				swaps++
				swapped = true
			}
		}
		if !swapped {
			break
		}
	}
	if swaps == 0 {
		return
	}
	for _, topics := range plan {
		sort.Slice(topics[primary], func(i, j int) bool { return topics[primary][i] < topics[primary][j] })
	}
	slog.Info("rebalance plan: partitions swapped towards the members whose stores hold the most of them", "swapped", swaps)
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
	owner, parts := owners(plan, primary)
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

// owners returns the group member id that plan gives each partition of
// primary, and those partitions in ascending order.
func owners(plan sarama.BalanceStrategyPlan, primary string) (map[int32]string, []int32) {
	owner := map[int32]string{}
	var parts []int32
	for gid, topics := range plan {
		for _, p := range topics[primary] {
			owner[p] = gid
			parts = append(parts, p)
		}
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	return owner, parts
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
	return wrapUserData(memberData{Member: m}, inner), nil
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

// describeAssignment asks coord, group's coordinator, to describe the
// group, with the version sarama's admin would use, and builds the
// Assignment of the primary topic from the answer.
func describeAssignment(coord *sarama.Broker, v sarama.KafkaVersion, group, primary string) (Assignment, error) {
	req := &sarama.DescribeGroupsRequest{Groups: []string{group}}
	switch { // the versions sarama's admin asks with
	case v.IsAtLeast(sarama.V2_4_0_0):
		req.Version = 5
	case v.IsAtLeast(sarama.V2_3_0_0):
		req.Version = 3
	case v.IsAtLeast(sarama.V2_0_0_0):
		req.Version = 2
	case v.IsAtLeast(sarama.V1_1_0_0):
		req.Version = 1
	}
	resp, err := coord.DescribeGroups(req)
	if err != nil {
		return Assignment{}, err
	}
	if len(resp.Groups) != 1 {
		return Assignment{}, fmt.Errorf("describe group %s: %d answers", group, len(resp.Groups))
	}
	if !errors.Is(resp.Groups[0].Err, sarama.ErrNoError) {
		return Assignment{}, fmt.Errorf("describe group %s: %w", group, resp.Groups[0].Err)
	}
	return assignmentOf(resp.Groups[0], primary)
}

func assignmentOf(d *sarama.GroupDescription, primary string) (Assignment, error) {
	a := Assignment{State: d.State, owners: map[int32]Member{}}
	for id, md := range d.Members {
		ma := MemberAssignment{GroupMemberID: id}
		if meta, err := md.GetMemberMetadata(); err == nil && meta != nil {
			d, _, _ := unwrapUserData(meta.UserData)
			ma.Member = d.Member
		}
		if asg, err := md.GetMemberAssignment(); err == nil && asg != nil {
			ma.Partitions = append(ma.Partitions, asg.Topics[primary]...)
			// The assignment's UserData is what the member sends at its next
			// join; it carries the Member as well, and is newer.
			if d, _, err := unwrapUserData(asg.UserData); err == nil && d.ID != "" {
				ma.Member = d.Member
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
