package localaws

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Queue API values (QUEUES-NOTES.md sections 1-3).
const (
	queueCreating = "CREATING"
	queueActive   = "ACTIVE"
	queueUpdating = "UPDATING"
	queueDeleting = "DELETING"

	startLatest      = "LATEST"
	startTrimHorizon = "TRIM_HORIZON"
	startAtTimestamp = "AT_TIMESTAMP"

	deadLetterBuiltIn = "BUILT_IN"
	deadLetterNone    = "NONE"

	defaultVisibility  = 30
	maxVisibility      = 43200 // 12 h
	defaultMaxReceives = 6
	// maxMaxReceives: the API documents no bound (?); 1000 is SQS's for the same setting.
	maxMaxReceives  = 1000
	maxReceiveLimit = 10 // also the default Limit
	defaultWait     = 9
	maxWait         = 20
	maxEntries      = 10
	maxHandleLen    = 1024
	maxQueueTags    = 50
	// defaultListQueues: the API documents no default (?); ListStreams' is 100.
	defaultListQueues = 100
	maxListQueues     = 10000
)

const (
	defaultQueueDelay = 100 * time.Millisecond
	defaultQueuePoll  = 100 * time.Millisecond
	// maxHeldRecords bounds the records a queue holds unacknowledged: its reader pauses there.
	maxHeldRecords   = 100_000
	getRecordsLimit  = 1000
	readsPerPoll     = 5  // GetRecords calls per shard and poll while the shard has more
	shardListingPoll = 10 // ListShards every this many polls (and after a shard closes)
	maxIdlePoll      = time.Second
)

var (
	queueNamePattern = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,128}$`)
	// Groups: partition, region, account.
	streamARNPattern = regexp.MustCompile(`^arn:(aws[a-z-]*):kinesis:([a-z0-9-]+):(\d{12}):stream/[a-zA-Z0-9_.-]{1,128}$`)
	queueARNPattern  = regexp.MustCompile(`^arn:aws[a-z-]*:kinesis:[a-z0-9-]+:\d{12}:queue/\S+$`)
)

// QueueOptions tunes a QueueServer's timing for tests; zero fields take the defaults.
type QueueOptions struct {
	// ActivationDelay is how long a new queue stays CREATING and an updated one UPDATING: 100 ms.
	ActivationDelay time.Duration
	// DeletionDelay is how long a deleted queue stays DELETING (its name taken) before it is gone: 100 ms.
	DeletionDelay time.Duration
	// PollInterval is how often each queue reads its stream's shards: 100 ms.
	PollInterval time.Duration
}

// QueueServer is an HTTP server in front of a Kinesis endpoint (kinesis-local, or an
// AutoDistribution proxy in front of it) that answers the Kinesis queue operations, which
// kinesis-local 0.6.2 denies, and forwards every other request unchanged, streaming.
//
// Each queue reads every shard of its on-demand stream from the target (GetRecords polling, children
// of a reshard included) and keeps each record's delivery state in memory: visible, in flight
// with a receipt handle until its visibility timeout ends, or dead letter. Acknowledged records are
// forgotten; the reader never reads a record twice. Retention is ignored: records stay until
// acknowledged or the queue is deleted (test streams live far less than a day).
//
// Choices where AWS's behaviour is not documented (QUEUES-NOTES.md's (?)) are stated at the
// operations below. Not emulated: quotas (queues per stream, CREATING/DELETING per Region, 120,000
// in flight), tag operations on queues, and the refusal to delete a stream that has queues. It
// listens on loopback only.
type QueueServer struct {
	target    *url.URL
	opts      QueueOptions
	transport *http.Transport
	proxy     *httputil.ReverseProxy
	srv       *http.Server
	url       string
	served    <-chan struct{} // closed when Serve has returned
	// ctx ends with Close: it stops the readers and ends long polls.
	ctx    context.Context //nolint:containedctx // lifetime of the server's own work
	cancel context.CancelFunc

	mu       sync.Mutex
	queues   map[string]*queue // by ARN, DELETING ones until they are gone
	closed   bool
	handlers sync.WaitGroup
	readers  sync.WaitGroup
	running  atomic.Int32 // readers not yet returned, for tests
}

// NewQueueServer starts a queue server in front of target (a plain-HTTP Kinesis endpoint such as
// Servers.KinesisEndpoint or AutoDistribution.URL) and closes it when the test ends.
func NewQueueServer(t testing.TB, target string) *QueueServer {
	t.Helper()
	return NewQueueServerWith(t, target, QueueOptions{})
}

// NewQueueServerWith is NewQueueServer with options.
func NewQueueServerWith(t testing.TB, target string, opts QueueOptions) *QueueServer {
	t.Helper()
	q, err := StartQueueServerWith(target, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

// StartQueueServer starts a queue server in front of target, for a program (a bench) that closes
// it itself.
func StartQueueServer(target string) (*QueueServer, error) {
	return StartQueueServerWith(target, QueueOptions{})
}

// StartQueueServerWith is StartQueueServer with options.
func StartQueueServerWith(target string, opts QueueOptions) (*QueueServer, error) {
	f, err := newFrontProxy("queues", target)
	if err != nil {
		return nil, err
	}
	opts.ActivationDelay = cmp.Or(opts.ActivationDelay, defaultQueueDelay)
	opts.DeletionDelay = cmp.Or(opts.DeletionDelay, defaultQueueDelay)
	opts.PollInterval = cmp.Or(opts.PollInterval, defaultQueuePoll)
	ctx, cancel := context.WithCancel(context.Background())
	q := &QueueServer{
		target: f.target, opts: opts, transport: f.transport, proxy: f.proxy, url: f.url,
		ctx: ctx, cancel: cancel, queues: map[string]*queue{},
	}
	q.srv = &http.Server{Handler: http.HandlerFunc(q.serve), ReadHeaderTimeout: readHeaderTimeout}
	q.served = f.serve(q.srv)
	return q, nil
}

// URL is the server's endpoint, for a client's BaseEndpoint: the SDK sends queue and stream
// operations alike there.
func (s *QueueServer) URL() string { return s.url }

// Close ends long polls, stops the queues' readers, cuts open connections and waits for all of
// it, so that no goroutine of the server outlives its test. Later calls do nothing more.
func (s *QueueServer) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	_ = s.srv.Close()
	<-s.served
	s.handlers.Wait()
	s.readers.Wait() // after handlers: a CreateQueue in progress may still start one
	s.transport.CloseIdleConnections()
}

// enter counts a handler unless the server is closing: Add must not race with Close's Wait.
func (s *QueueServer) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.handlers.Add(1)
	return true
}

type queueOp func(s *QueueServer, r *http.Request, body []byte) (any, error)

var queueOps = map[string]queueOp{
	"CreateQueue":                            (*QueueServer).createQueue,
	"DescribeQueue":                          (*QueueServer).describeQueue,
	"ListQueues":                             (*QueueServer).listQueues,
	"UpdateQueue":                            (*QueueServer).updateQueue,
	"DeleteQueue":                            (*QueueServer).deleteQueue,
	"ReceiveQueueRecords":                    receiveOp(false),
	"ReceiveDeadLetterQueueRecords":          receiveOp(true),
	"AcknowledgeQueueRecords":                batchOp(false, false, ackRecord),
	"AcknowledgeDeadLetterQueueRecords":      batchOp(true, false, ackRecord),
	"UpdateQueueRecordsVisibility":           batchOp(false, true, setRecordVisibility),
	"UpdateDeadLetterQueueRecordsVisibility": batchOp(true, true, setRecordVisibility),
	"RestoreDeadLetterQueueRecords":          batchOp(true, false, restoreRecord),
}

func (s *QueueServer) serve(w http.ResponseWriter, r *http.Request) {
	if !s.enter() {
		http.Error(w, "localaws: queues: closed", http.StatusServiceUnavailable)
		return
	}
	defer s.handlers.Done()
	op, ok := queueOps[operation(r.Header)]
	if !ok {
		s.proxy.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err != nil {
		apiError("SerializationException", "localaws: queues: read request: "+err.Error()).write(w)
		return
	}
	out, err := op(s, r, body)
	if err == nil {
		body, err = json.Marshal(out)
	}
	if err != nil {
		asAPIError(err).write(w)
		return
	}
	w.Header().Set("Content-Type", jsonContentType)
	_, _ = w.Write(body)
}

// queue is one queue. The server's mutex guards it.
type queue struct {
	arn, name     string
	scope         string // partition:region:account, where names are unique
	region        string
	streamARN     string
	streamCreated time.Time
	start         startPosition
	effective     time.Time // the described StartingPosition.Timestamp once ACTIVE
	created       time.Time
	activeAt      time.Time // CREATING until then
	updatingUntil time.Time
	goneAt        time.Time // zero unless DELETING
	attrs         queueAttrs
	recs          *records
	wake          chan struct{} // closed and replaced when records may have become receivable
	poke          chan struct{} // a receive starts waiting: its reader should poll now
	demandUntil   time.Time     // when the last waiting receive ends: its reader polls briskly until then
	stop          context.CancelFunc
}

func (q *queue) status(now time.Time) string {
	switch {
	case !q.goneAt.IsZero():
		return queueDeleting
	case now.Before(q.activeAt):
		return queueCreating
	case now.Before(q.updatingUntil):
		return queueUpdating
	}
	return queueActive
}

func (q *queue) notify() {
	close(q.wake)
	q.wake = make(chan struct{})
}

type startPosition struct {
	typ string
	at  time.Time // AT_TIMESTAMP only
}

type queueAttrs struct {
	visibility  int32
	deadLetter  string
	maxReceives int32 // with BUILT_IN
}

// merge returns a with the attributes given in in: omitted ones stay as they are. With NONE a
// MaxReceiveCount is accepted and dropped (the API requires it only with BUILT_IN).
func (a queueAttrs) merge(in *queueAttrsJSON) (queueAttrs, error) {
	if in == nil {
		return a, nil
	}
	if v := in.VisibilityTimeoutSeconds; v != nil {
		if *v < 0 || *v > maxVisibility {
			return a, validationf("VisibilityTimeoutSeconds %d is not within 0-%d", *v, maxVisibility)
		}
		a.visibility = *v
	}
	dl := in.DeadLetterConfiguration
	switch {
	case dl == nil:
	case dl.TargetType == deadLetterNone:
		a.deadLetter, a.maxReceives = deadLetterNone, 0
	case dl.TargetType != deadLetterBuiltIn:
		return a, validationf("TargetType %q is not one of %s, %s", dl.TargetType, deadLetterBuiltIn, deadLetterNone)
	case dl.MaxReceiveCount == nil:
		return a, validationf("MaxReceiveCount is required with TargetType %s", deadLetterBuiltIn)
	case *dl.MaxReceiveCount < 1 || *dl.MaxReceiveCount > maxMaxReceives:
		return a, validationf("MaxReceiveCount %d is not within 1-%d", *dl.MaxReceiveCount, maxMaxReceives)
	default:
		a.deadLetter, a.maxReceives = deadLetterBuiltIn, *dl.MaxReceiveCount
	}
	return a, nil
}

// Wire shapes (awsJson1_1; member names as in the SDK's request and response snapshots).
type (
	queueAttrsJSON struct {
		VisibilityTimeoutSeconds *int32          `json:",omitempty"`
		DeadLetterConfiguration  *deadLetterJSON `json:",omitempty"`
	}
	deadLetterJSON struct {
		TargetType      string
		MaxReceiveCount *int32 `json:",omitempty"`
	}
	startJSON struct {
		Type      string
		Timestamp *epochTime `json:",omitempty"`
	}
	streamConfigJSON struct {
		StreamARN        string
		StartingPosition *startJSON `json:",omitempty"`
	}
	queueDescriptionJSON struct {
		QueueARN                string
		QueueName               string
		QueueStatus             string
		QueueCreationTimestamp  epochTime
		StreamConfigurationList []streamConfigJSON
		QueueAttributes         *queueAttrsJSON
	}
	queueRecordJSON struct {
		RecordID                    string `json:"RecordId"`
		ReceiptHandle               string
		ReceiveCount                int32
		FirstReceiveTimestamp       epochTime
		ApproximateArrivalTimestamp epochTime
		Data                        []byte
		PartitionKey                *string `json:",omitempty"`
	}
)

func (q *queue) describe(now time.Time) queueDescriptionJSON {
	status := q.status(now)
	pos := &startJSON{Type: q.start.typ}
	switch {
	case status != queueCreating:
		pos.Timestamp = ptrTo(epochTime(q.effective))
	case q.start.typ == startAtTimestamp:
		pos.Timestamp = ptrTo(epochTime(q.start.at)) // as given, until ACTIVE
	}
	attrs := &queueAttrsJSON{
		VisibilityTimeoutSeconds: ptrTo(q.attrs.visibility),
		DeadLetterConfiguration:  &deadLetterJSON{TargetType: q.attrs.deadLetter},
	}
	if q.attrs.deadLetter == deadLetterBuiltIn {
		attrs.DeadLetterConfiguration.MaxReceiveCount = ptrTo(q.attrs.maxReceives)
	}
	return queueDescriptionJSON{
		QueueARN: q.arn, QueueName: q.name, QueueStatus: status, QueueCreationTimestamp: epochTime(q.created),
		StreamConfigurationList: []streamConfigJSON{{StreamARN: q.streamARN, StartingPosition: pos}},
		QueueAttributes:         attrs,
	}
}

type describeOut struct{ QueueDescription queueDescriptionJSON }

// createQueue answers CreateQueue. The stream must exist, be ACTIVE or UPDATING and on-demand
// (else InvalidArgumentException, as AWS documents). Names are unique per partition, Region and
// account (those of the stream's ARN): a name is taken until its queue is gone, DELETING included.
// Tags are checked (at most 50) and not kept.
func (s *QueueServer) createQueue(r *http.Request, body []byte) (any, error) {
	var in struct {
		QueueName               string
		StreamConfigurationList []struct {
			StreamARN        string
			StartingPosition *startJSON
		}
		QueueAttributes *queueAttrsJSON
		Tags            map[string]string
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	if !queueNamePattern.MatchString(in.QueueName) {
		return nil, validationf("QueueName %q must be 1-128 characters of [a-zA-Z0-9_.-]", in.QueueName)
	}
	if len(in.StreamConfigurationList) != 1 {
		return nil, validationf("StreamConfigurationList must have exactly 1 entry, not %d", len(in.StreamConfigurationList))
	}
	sc := in.StreamConfigurationList[0]
	arn := streamARNPattern.FindStringSubmatch(sc.StreamARN)
	if arn == nil {
		return nil, validationf("StreamARN %q is not a stream ARN", sc.StreamARN)
	}
	start, err := parseStart(sc.StartingPosition)
	if err != nil {
		return nil, err
	}
	attrs, err := queueAttrs{defaultVisibility, deadLetterBuiltIn, defaultMaxReceives}.merge(in.QueueAttributes)
	if err != nil {
		return nil, err
	}
	if len(in.Tags) > maxQueueTags {
		return nil, validationf("%d tags; at most %d", len(in.Tags), maxQueueTags)
	}
	stream, err := s.describeStream(r.Context(), sc.StreamARN, arn[2])
	if err != nil {
		return nil, err
	}
	now := time.Now()
	q := &queue{
		// The id is 32 hex digits: a DNS label, which the SDK requires of it.
		arn:  fmt.Sprintf("arn:%s:kinesis:%s:%s:queue/%s", arn[1], arn[2], arn[3], randomHex()),
		name: in.QueueName, scope: strings.Join(arn[1:4], ":"), region: arn[2],
		streamARN: sc.StreamARN, streamCreated: stream.created, start: start,
		effective: start.effective(now, stream.earliest(now)), created: now,
		activeAt: now.Add(s.opts.ActivationDelay), attrs: attrs,
		recs: newRecords(), wake: make(chan struct{}), poke: make(chan struct{}, 1),
	}
	q.recs.maxReceives = attrs.maxReceives
	return s.register(q, now)
}

// register adds q unless its name is taken and starts its reader.
func (s *QueueServer) register(q *queue, now time.Time) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forget(now)
	for _, o := range s.queues {
		if o.scope == q.scope && o.name == q.name {
			return nil, apiError("ResourceInUseException", fmt.Sprintf("queue %s already exists: %s", q.name, o.arn))
		}
	}
	s.queues[q.arn] = q
	var ctx context.Context
	ctx, q.stop = context.WithCancel(s.ctx)
	s.readers.Add(1)
	s.running.Add(1)
	go s.read(ctx, q)
	return describeOut{q.describe(now)}, nil
}

func parseStart(in *startJSON) (startPosition, error) {
	if in == nil {
		return startPosition{typ: startLatest}, nil
	}
	switch in.Type {
	case startLatest, startTrimHorizon:
		if in.Timestamp != nil {
			return startPosition{}, validationf("Timestamp is only for StartingPosition Type %s", startAtTimestamp)
		}
		return startPosition{typ: in.Type}, nil
	case startAtTimestamp:
		if in.Timestamp == nil {
			return startPosition{}, validationf("StartingPosition Type %s needs a Timestamp", startAtTimestamp)
		}
		return startPosition{typ: in.Type, at: time.Time(*in.Timestamp)}, nil
	}
	return startPosition{}, validationf("StartingPosition Type %q is not one of %s, %s, %s",
		in.Type, startLatest, startTrimHorizon, startAtTimestamp)
}

// effective is the described start once ACTIVE: the creation time for LATEST, the earliest
// readable time for TRIM_HORIZON, the later of the two for AT_TIMESTAMP.
func (p startPosition) effective(created, earliest time.Time) time.Time {
	switch p.typ {
	case startLatest:
		return created
	case startAtTimestamp:
		if p.at.After(earliest) {
			return p.at
		}
	}
	return earliest
}

// iterator is the GetShardIterator request that starts reading a shard where the queue starts.
// LATEST reads from the queue's creation time rather than with a LATEST iterator, which would
// miss what is put between CreateQueue and the reader's first call.
func (q *queue) iterator(shard string) map[string]any {
	in := map[string]any{"StreamARN": q.streamARN, "ShardId": shard, "ShardIteratorType": q.start.typ}
	switch q.start.typ {
	case startLatest:
		in["ShardIteratorType"], in["Timestamp"] = startAtTimestamp, epochTime(q.created)
	case startAtTimestamp:
		in["Timestamp"] = epochTime(q.start.at)
	}
	return in
}

type streamSummary struct {
	created   time.Time
	retention time.Duration
}

func (t streamSummary) earliest(now time.Time) time.Time {
	if oldest := now.Add(-t.retention); oldest.After(t.created) {
		return oldest
	}
	return t.created
}

// describeStream asks the target about a queue's stream and checks that it can have queues.
func (s *QueueServer) describeStream(ctx context.Context, arn, region string) (streamSummary, error) {
	var out struct {
		StreamDescriptionSummary struct {
			StreamStatus            string
			StreamCreationTimestamp epochTime
			RetentionPeriodHours    int
			StreamModeDetails       struct{ StreamMode string }
		}
	}
	if err := s.call(ctx, region, "DescribeStreamSummary", map[string]string{"StreamARN": arn}, &out); err != nil {
		return streamSummary{}, err
	}
	sum := out.StreamDescriptionSummary
	if sum.StreamModeDetails.StreamMode != streamModeOnDmd {
		return streamSummary{}, apiError("InvalidArgumentException", "queues need an on-demand stream; "+arn+" is "+
			sum.StreamModeDetails.StreamMode)
	}
	if sum.StreamStatus != queueActive && sum.StreamStatus != queueUpdating {
		return streamSummary{}, apiError("ResourceInUseException", "stream "+arn+" is "+sum.StreamStatus)
	}
	return streamSummary{time.Time(sum.StreamCreationTimestamp), time.Duration(sum.RetentionPeriodHours) * time.Hour}, nil
}

func (s *QueueServer) describeQueue(_ *http.Request, body []byte) (any, error) {
	var in struct{ QueueARN string }
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	q, err := s.lookup(in.QueueARN, now)
	if err != nil {
		return nil, err
	}
	return describeOut{q.describe(now)}, nil
}

// updateQueue answers UpdateQueue: the queue must be ACTIVE; it is UPDATING for ActivationDelay,
// with the new attributes in force at once. A new visibility timeout applies to later receives
// only; a lower MaxReceiveCount dead-letters a visible record when it would next be delivered;
// records that are dead letters stay so when dead-lettering is switched off.
func (s *QueueServer) updateQueue(_ *http.Request, body []byte) (any, error) {
	var in struct {
		QueueARN        string
		QueueAttributes *queueAttrsJSON
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	if in.QueueAttributes == nil {
		return nil, validationf("QueueAttributes is required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	q, err := s.lookup(in.QueueARN, now)
	if err != nil {
		return nil, err
	}
	if err = mustBe(q, now, queueActive); err != nil {
		return nil, err
	}
	attrs, err := q.attrs.merge(in.QueueAttributes)
	if err != nil {
		return nil, err // nothing changed
	}
	q.attrs, q.recs.maxReceives = attrs, attrs.maxReceives
	q.updatingUntil = now.Add(s.opts.ActivationDelay)
	return describeOut{q.describe(now)}, nil
}

// deleteQueue answers DeleteQueue: an ACTIVE or UPDATING queue becomes DELETING at once, which
// stops its reader, drops its records (their handles die) and ends its long polls; it is gone
// after DeletionDelay.
func (s *QueueServer) deleteQueue(_ *http.Request, body []byte) (any, error) {
	var in struct{ QueueARN string }
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	q, err := s.lookup(in.QueueARN, now)
	if err != nil {
		return nil, err
	}
	if err = mustBe(q, now, queueActive, queueUpdating); err != nil {
		return nil, err
	}
	q.goneAt = now.Add(s.opts.DeletionDelay)
	q.stop()
	q.recs = newRecords()
	q.notify()
	return struct{}{}, nil
}

// listQueues answers ListQueues: queues (DELETING ones too) by ARN order, those on any of the
// StreamFilter's streams when it is given (matching StreamCreationTimestamp to the millisecond
// when that is given too). NextToken carries the last ARN returned.
func (s *QueueServer) listQueues(_ *http.Request, body []byte) (any, error) {
	var in struct {
		MaxResults   *int32
		NextToken    *string
		StreamFilter []struct {
			StreamARN               string
			StreamCreationTimestamp *epochTime
		}
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	limit := int(ptrOr(in.MaxResults, defaultListQueues))
	if limit < 1 || limit > maxListQueues {
		return nil, validationf("MaxResults %d is not within 1-%d", limit, maxListQueues)
	}
	after := ""
	if in.NextToken != nil {
		b, err := base64.RawURLEncoding.DecodeString(*in.NextToken)
		if err != nil || !queueARNPattern.Match(b) {
			return nil, apiError("InvalidArgumentException", "NextToken is not valid")
		}
		after = string(b)
	}
	for _, f := range in.StreamFilter {
		if f.StreamARN == "" {
			return nil, validationf("StreamFilter entries need a StreamARN")
		}
	}
	matches := func(q *queue) bool {
		for _, f := range in.StreamFilter {
			if f.StreamARN == q.streamARN && (f.StreamCreationTimestamp == nil ||
				time.Time(*f.StreamCreationTimestamp).UnixMilli() == q.streamCreated.UnixMilli()) {
				return true
			}
		}
		return len(in.StreamFilter) == 0
	}
	return s.listPage(after, limit, matches), nil
}

type queueSummaryJSON struct {
	QueueARN, QueueName, QueueStatus string
	QueueCreationTimestamp           epochTime
	Streams                          []streamIDJSON
}

type streamIDJSON struct {
	StreamARN               string
	StreamCreationTimestamp epochTime
}

type listQueuesOut struct {
	QueueSummaries []queueSummaryJSON
	NextToken      *string `json:",omitempty"`
}

func (s *QueueServer) listPage(after string, limit int, matches func(*queue) bool) listQueuesOut {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.forget(now)
	var found []*queue
	for _, q := range s.queues {
		if q.arn > after && matches(q) {
			found = append(found, q)
		}
	}
	slices.SortFunc(found, func(a, b *queue) int { return strings.Compare(a.arn, b.arn) })
	out := listQueuesOut{QueueSummaries: []queueSummaryJSON{}}
	for i, q := range found {
		if i == limit {
			out.NextToken = ptrTo(base64.RawURLEncoding.EncodeToString([]byte(found[i-1].arn)))
			break
		}
		out.QueueSummaries = append(out.QueueSummaries, queueSummaryJSON{
			QueueARN: q.arn, QueueName: q.name, QueueStatus: q.status(now), QueueCreationTimestamp: epochTime(q.created),
			Streams: []streamIDJSON{{StreamARN: q.streamARN, StreamCreationTimestamp: epochTime(q.streamCreated)}},
		})
	}
	return out
}

// lookup returns the queue of arn. The caller holds s.mu.
func (s *QueueServer) lookup(arn string, now time.Time) (*queue, error) {
	if !queueARNPattern.MatchString(arn) {
		return nil, validationf("QueueARN %q is not a queue ARN", arn)
	}
	s.forget(now)
	q, ok := s.queues[arn]
	if !ok {
		return nil, apiError("ResourceNotFoundException", "queue "+arn+" not found")
	}
	return q, nil
}

// forget removes the queues whose deletion has completed. The caller holds s.mu.
func (s *QueueServer) forget(now time.Time) {
	for arn, q := range s.queues {
		if !q.goneAt.IsZero() && !now.Before(q.goneAt) {
			delete(s.queues, arn)
		}
	}
}

func mustBe(q *queue, now time.Time, statuses ...string) error {
	if st := q.status(now); !slices.Contains(statuses, st) {
		return apiError("ResourceInUseException", fmt.Sprintf("queue %s is %s, not %s", q.arn, st, strings.Join(statuses, " or ")))
	}
	return nil
}

func receiveOp(dead bool) queueOp {
	return func(s *QueueServer, r *http.Request, body []byte) (any, error) { return s.receive(r, body, dead) }
}

// receive answers ReceiveQueueRecords and, with dead, ReceiveDeadLetterQueueRecords: a long poll
// that returns as soon as a record is receivable, else an empty list after WaitTimeSeconds. Only
// ACTIVE and UPDATING queues deliver; others answer ResourceInUseException, also to a poll in
// progress when its queue is deleted. The poll ends early, empty, when the client goes away or
// the server closes.
func (s *QueueServer) receive(r *http.Request, body []byte, dead bool) (any, error) {
	var in struct {
		QueueARN                 string
		Limit                    *int32
		WaitTimeSeconds          *int32
		VisibilityTimeoutSeconds *int32
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	limit, wait := ptrOr(in.Limit, maxReceiveLimit), ptrOr(in.WaitTimeSeconds, defaultWait)
	switch {
	case limit < 1 || limit > maxReceiveLimit:
		return nil, validationf("Limit %d is not within 1-%d", limit, maxReceiveLimit)
	case wait < 0 || wait > maxWait:
		return nil, validationf("WaitTimeSeconds %d is not within 0-%d", wait, maxWait)
	case in.VisibilityTimeoutSeconds != nil && (*in.VisibilityTimeoutSeconds < 0 || *in.VisibilityTimeoutSeconds > maxVisibility):
		return nil, validationf("VisibilityTimeoutSeconds %d is not within 0-%d", *in.VisibilityTimeoutSeconds, maxVisibility)
	}
	deadline := time.Now().Add(time.Duration(wait) * time.Second)
	for {
		got, wake, next, err := s.tryReceive(in.QueueARN, dead, int(limit), in.VisibilityTimeoutSeconds, deadline)
		now := time.Now()
		if err != nil || len(got) > 0 || !now.Before(deadline) {
			return struct{ QueueRecords []queueRecordJSON }{got}, err
		}
		if next.IsZero() || next.After(deadline) {
			next = deadline
		}
		timer := time.NewTimer(next.Sub(now))
		select {
		case <-wake:
		case <-timer.C:
		case <-r.Context().Done():
			deadline = now
		case <-s.ctx.Done():
			deadline = now
		}
		timer.Stop()
	}
}

// tryReceive takes what is receivable now. It returns the records, and for the wait when there
// are none, the channel closed when records may have arrived and when the next delivery in flight
// ends (zero if none). A receive about to wait until waitUntil makes the queue's reader poll at
// once and then briskly.
func (s *QueueServer) tryReceive(arn string, dead bool, limit int, visibility *int32, waitUntil time.Time) (
	[]queueRecordJSON, <-chan struct{}, time.Time, error,
) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	q, err := s.lookup(arn, now)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	if err = mustBe(q, now, queueActive, queueUpdating); err != nil {
		return nil, nil, time.Time{}, err
	}
	q.recs.settle(now)
	l := &q.recs.main
	if dead {
		l = &q.recs.dead
	}
	vis := time.Duration(ptrOr(visibility, q.attrs.visibility)) * time.Second
	got := make([]queueRecordJSON, 0, limit)
	for _, r := range q.recs.take(l, limit, now, vis) {
		got = append(got, queueRecordJSON{
			RecordID: r.id, ReceiptHandle: r.handle, ReceiveCount: r.receives,
			FirstReceiveTimestamp: epochTime(r.first), ApproximateArrivalTimestamp: epochTime(r.arrival),
			Data: r.data, PartitionKey: r.key,
		})
	}
	if len(got) == 0 && now.Before(waitUntil) {
		if waitUntil.After(q.demandUntil) {
			q.demandUntil = waitUntil
		}
		select {
		case q.poke <- struct{}{}:
		default: // a poke is pending already
		}
	}
	next, _ := q.recs.nextDeadline()
	return got, q.wake, next, nil
}

type batchEntry struct {
	ReceiptHandle            string
	VisibilityTimeoutSeconds *int32
}

type (
	handleJSON struct{ ReceiptHandle string }
	failedJSON struct{ ReceiptHandle, ErrorCode, ErrorMessage string }
	batchOut   struct {
		Successful []handleJSON
		Failed     []failedJSON
	}
)

// batchOp answers one of the five operations on receipt handles: apply runs for each entry whose
// handle is that of a delivery in flight in the main lane (or, with dead, the dead-letter lane).
// Other entries fail with InvalidArgumentException: handles unknown, of the other lane, of an
// acknowledged or re-received record, or whose visibility timeout has ended. On a DELETING queue
// every entry fails with ResourceNotFoundException (the records are gone with the queue); once
// the queue is gone the call fails with it.
func batchOp(dead, timeouts bool, apply func(q *queue, r *queueRecord, e batchEntry, now time.Time)) queueOp {
	return func(s *QueueServer, _ *http.Request, body []byte) (any, error) {
		var in struct {
			QueueARN string
			Entries  []batchEntry
		}
		if err := decode(body, &in); err != nil {
			return nil, err
		}
		if err := validateEntries(in.Entries, timeouts); err != nil {
			return nil, err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		now := time.Now()
		q, err := s.lookup(in.QueueARN, now)
		if err != nil {
			return nil, err
		}
		q.recs.settle(now)
		l := &q.recs.main
		if dead {
			l = &q.recs.dead
		}
		out := batchOut{Successful: []handleJSON{}, Failed: []failedJSON{}}
		for _, e := range in.Entries {
			r, ok := q.recs.inFlight(e.ReceiptHandle, l)
			switch {
			case q.status(now) == queueDeleting:
				out.Failed = append(out.Failed, failedJSON{e.ReceiptHandle, "ResourceNotFoundException", "queue " + q.arn + " is being deleted"})
			case !ok:
				out.Failed = append(out.Failed, failedJSON{e.ReceiptHandle, "InvalidArgumentException",
					"receipt handle is not that of a record in flight: unknown, expired, or replaced by a later receive"})
			default:
				apply(q, r, e, now)
				out.Successful = append(out.Successful, handleJSON{e.ReceiptHandle})
			}
		}
		q.notify() // records may have become visible
		return out, nil
	}
}

func validateEntries(entries []batchEntry, timeouts bool) error {
	if len(entries) < 1 || len(entries) > maxEntries {
		return validationf("%d Entries; 1-%d are allowed", len(entries), maxEntries)
	}
	for _, e := range entries {
		if e.ReceiptHandle == "" || len(e.ReceiptHandle) > maxHandleLen {
			return validationf("ReceiptHandle must have 1-%d characters", maxHandleLen)
		}
		v := e.VisibilityTimeoutSeconds
		if timeouts && v == nil {
			return validationf("VisibilityTimeoutSeconds is required")
		}
		if timeouts && (*v < 0 || *v > maxVisibility) {
			return validationf("VisibilityTimeoutSeconds %d is not within 0-%d", *v, maxVisibility)
		}
	}
	return nil
}

func ackRecord(q *queue, r *queueRecord, _ batchEntry, _ time.Time) { q.recs.drop(r) }

func setRecordVisibility(q *queue, r *queueRecord, e batchEntry, now time.Time) {
	q.recs.setVisibility(r, now, time.Duration(*e.VisibilityTimeoutSeconds)*time.Second)
}

func restoreRecord(q *queue, r *queueRecord, _ batchEntry, _ time.Time) { q.recs.restore(r) }

// read is a queue's reader: it polls every shard of the stream until ctx ends (DeleteQueue or
// Close). Failed calls are retried at the next poll; a shard's reading restarts after the last
// record read, so that no record is held twice.
//
// It polls every PollInterval while records come or a receive is waiting on the queue, and backs
// off to maxIdlePoll otherwise: kinesis-local serves a few hundred calls a second in all, and
// every idle queue of every parallel test would take 40 of them.
func (s *QueueServer) read(ctx context.Context, q *queue) {
	defer s.readers.Done()
	defer s.running.Add(-1)
	rd := streamReader{s: s, q: q, shards: map[string]*shardCursor{}}
	idle := s.opts.PollInterval
	timer := time.NewTimer(idle)
	defer timer.Stop()
	for n := 0; ; n++ {
		if n%shardListingPoll == 0 || rd.relist {
			rd.list(ctx)
		}
		read := false
		for id, c := range rd.shards {
			if !c.closed {
				read = rd.poll(ctx, id, c) || read
			}
		}
		idle = min(idle*2, max(maxIdlePoll, s.opts.PollInterval))
		if read || s.demanded(q) {
			idle = s.opts.PollInterval
		}
		timer.Reset(idle)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-q.poke:
		}
	}
}

type streamReader struct {
	s      *QueueServer
	q      *queue // its immutable fields only, outside s.mu
	shards map[string]*shardCursor
	relist bool // a shard has closed: its children may be new
}

type shardCursor struct {
	iterator string
	after    string // sequence number of the last record read
	closed   bool
}

// list adds the stream's shards not yet read. Closed ones are read to their end, and children
// created by a reshard are found here, within shardListingPoll polls: the queue promises no
// order, so parents and children are read side by side.
func (rd *streamReader) list(ctx context.Context) {
	in := map[string]string{"StreamARN": rd.q.streamARN}
	for {
		var out struct {
			Shards    []struct{ ShardId string }
			NextToken string
		}
		if rd.s.call(ctx, rd.q.region, "ListShards", in, &out) != nil {
			return
		}
		for _, sh := range out.Shards {
			if _, ok := rd.shards[sh.ShardId]; !ok {
				rd.shards[sh.ShardId] = &shardCursor{}
			}
		}
		if out.NextToken == "" {
			rd.relist = false
			return
		}
		in = map[string]string{"NextToken": out.NextToken}
	}
}

type streamRecord struct {
	SequenceNumber              string
	ApproximateArrivalTimestamp epochTime
	Data                        []byte
	PartitionKey                *string
}

// poll reads what shard id has, up to readsPerPoll GetRecords calls, and reports whether it
// read any record.
func (rd *streamReader) poll(ctx context.Context, id string, c *shardCursor) (read bool) {
	for range readsPerPoll {
		if rd.s.full(rd.q) || (c.iterator == "" && !rd.startShard(ctx, id, c)) {
			return read
		}
		var out struct {
			Records           []streamRecord
			NextShardIterator *string
		}
		in := map[string]any{"StreamARN": rd.q.streamARN, "ShardIterator": c.iterator, "Limit": getRecordsLimit}
		if rd.s.call(ctx, rd.q.region, "GetRecords", in, &out) != nil {
			c.iterator = "" // expired, or the target failed: start again after c.after
			return read
		}
		rd.s.add(rd.q, id, out.Records)
		if n := len(out.Records); n > 0 {
			c.after, read = out.Records[n-1].SequenceNumber, true
		}
		if out.NextShardIterator == nil {
			c.closed, rd.relist = true, true
			return read
		}
		c.iterator = *out.NextShardIterator
		if len(out.Records) == 0 {
			return read
		}
	}
	return read
}

func (rd *streamReader) startShard(ctx context.Context, id string, c *shardCursor) bool {
	in := rd.q.iterator(id)
	if c.after != "" {
		in = map[string]any{"StreamARN": rd.q.streamARN, "ShardId": id,
			"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": c.after}
	}
	var out struct{ ShardIterator string }
	if rd.s.call(ctx, rd.q.region, "GetShardIterator", in, &out) != nil {
		return false
	}
	c.iterator = out.ShardIterator
	return c.iterator != ""
}

// held is how many records the queue of arn holds unacknowledged, for tests.
func (s *QueueServer) held(arn string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q, ok := s.queues[arn]; ok {
		return q.recs.held()
	}
	return 0
}

func (s *QueueServer) readersRunning() int { return int(s.running.Load()) }

// demanded reports whether a receive waits, or waited until recently, on q.
func (s *QueueServer) demanded(q *queue) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Now().Before(q.demandUntil)
}

// full reports whether q holds as many records as it may: its reader waits for acknowledgements.
func (s *QueueServer) full(q *queue) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return q.recs.held() >= maxHeldRecords
}

// add gives q the records read from shard, unless it is being deleted.
func (s *QueueServer) add(q *queue, shard string, recs []streamRecord) {
	if len(recs) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !q.goneAt.IsZero() {
		return
	}
	for _, r := range recs {
		q.recs.add(&queueRecord{
			id: recordID(shard, r.SequenceNumber), data: r.Data, key: r.PartitionKey,
			arrival: time.Time(r.ApproximateArrivalTimestamp),
		})
	}
	q.notify()
}

// recordID derives a record's id from where it is in the stream, so that every queue on the
// stream gives it the same one.
func recordID(shard, sequence string) string {
	sum := sha256.Sum256([]byte(shard + "/" + sequence))
	return hex.EncodeToString(sum[:16])
}

// call sends one request to the target. kinesis-local needs Authorization and X-Amz-Date
// present and well formed, and never checks the signature. Its error answers come back as an
// *answer, to be passed on.
func (s *QueueServer) call(ctx context.Context, region, op string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("localaws: queues: %s: %w", op, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.target.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("localaws: queues: %s: %w", op, err)
	}
	now := time.Now().UTC()
	req.Header.Set("Content-Type", jsonContentType)
	req.Header.Set("X-Amz-Target", targetPrefix+op)
	req.Header.Set("X-Amz-Date", now.Format("20060102T150405Z"))
	req.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s/%s/%s/kinesis/aws4_request, "+
		"SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=%s",
		AccessKeyID, now.Format("20060102"), region, strings.Repeat("0", 64)))
	resp, err := s.transport.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("localaws: queues: %s: %w", op, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("localaws: queues: %s: %w", op, err)
	}
	if resp.StatusCode != http.StatusOK {
		return &answer{status: resp.StatusCode, body: b}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("localaws: queues: %s answer: %w", op, err)
	}
	return nil
}

// epochTime is a timestamp on the wire: seconds since the epoch with a fraction, as awsJson1_1
// writes them (the SDK and kinesis-local alike), to the millisecond.
type epochTime time.Time

func (t epochTime) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(time.Time(t).UnixMilli())/1e3, 'f', 3, 64), nil
}

func (t *epochTime) UnmarshalJSON(b []byte) error {
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("localaws: queues: timestamp: %w", err)
	}
	*t = epochTime(time.UnixMilli(int64(math.Round(secs * 1e3))))
	return nil
}

// decode reads a request body; what does not parse is a SerializationException, as on
// kinesis-local.
func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return apiError("SerializationException", "localaws: queues: "+err.Error())
	}
	return nil
}

func validationf(format string, args ...any) error {
	return apiError("ValidationException", fmt.Sprintf(format, args...))
}

func ptrTo[T any](v T) *T { return &v }

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
