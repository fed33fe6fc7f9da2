package kinesis

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dapr-kinesis/kinesis/internal/leases"
	awsauth "github.com/dapr/components-contrib/common/aws/auth"
	"github.com/dapr/kit/logger"
	kitmd "github.com/dapr/kit/metadata"
)

// consumerMode selects how the input side reads the stream.
type consumerMode string

const (
	// modeShared polls with GetRecords under shard leases (the upstream default).
	modeShared consumerMode = "shared"
	// modeExtended reads through enhanced fan-out (SubscribeToShard).
	modeExtended consumerMode = "extended"
	// modeQueue reads through a Kinesis queue (ReceiveQueueRecords): no leases, no order.
	modeQueue consumerMode = "queue"
)

// initialPosition is where a shard is read from when the lease table holds no checkpoint for it.
type initialPosition string

const (
	positionLatest      initialPosition = "LATEST"
	positionTrimHorizon initialPosition = "TRIM_HORIZON"
	positionAtTimestamp initialPosition = "AT_TIMESTAMP"
)

// aggregationMode selects whether the output side packs user records into KPL aggregated records.
type aggregationMode string

const (
	// aggregationNone puts each user record as a Kinesis record of its own.
	aggregationNone aggregationMode = "none"
	// aggregationKPL packs user records bound for the same shard into KPL aggregated records.
	aggregationKPL aggregationMode = "kpl"
)

// Defaults. The input ones are tuned for a start in seconds and low latency while staying within
// AWS's read limit of 5 GetRecords calls per second per shard; maxRecords is AWS's own maximum, so
// that a consumer catching up after an outage reads as fast as the shard allows.
const (
	defaultPollInterval         = 250 * time.Millisecond
	defaultMaxRecords           = 10000
	defaultLeaseDuration        = 10 * time.Second
	defaultShardSyncInterval    = 500 * time.Millisecond
	defaultRetryInitialInterval = 100 * time.Millisecond
	defaultRetryMaxInterval     = 10 * time.Second
	defaultBatchLinger          = 2 * time.Millisecond
	defaultMaxInFlightBatches   = 16
	defaultConcurrencyPerShard  = 1
	defaultLagWarningThreshold  = time.Minute

	// minPollInterval keeps every shard under AWS's 5 GetRecords calls per second.
	minPollInterval = 200 * time.Millisecond
	// maxMaxRecords is AWS's limit for one GetRecords call.
	maxMaxRecords = 10000

	// Upper bounds that catch a unit typed wrong ("10h" for "10s") at Init rather than as a stall.
	maxInterval       = 10 * time.Minute
	maxLeaseDuration  = time.Hour
	maxBatchLinger    = time.Minute
	maxWorkerIDLength = 256
	// maxConcurrencyPerShard bounds the handler calls of one shard; a shard reads at most 2 MiB/s.
	maxConcurrencyPerShard = 1000
	// maxRetention is Kinesis's longest retention (365 days).
	maxRetention = 365 * 24 * time.Hour
)

// kinesisMetadata is the component's metadata. Fields without `mdignore` are listed, with the same
// names, in metadata.yaml; the AWS credential fields come from the built-in "aws" profile.
type kinesisMetadata struct {
	StreamName   string       `json:"streamName" mapstructure:"streamName"`
	StreamARN    string       `json:"streamARN" mapstructure:"streamARN"`
	ConsumerName string       `json:"consumerName" mapstructure:"consumerName"`
	Mode         consumerMode `json:"mode" mapstructure:"mode"`
	Endpoint     string       `json:"endpoint" mapstructure:"endpoint"`

	Region                string `json:"region" mapstructure:"region" mapstructurealiases:"awsRegion" mdignore:"true"`
	AccessKey             string `json:"accessKey" mapstructure:"accessKey" mdignore:"true"`
	SecretKey             string `json:"secretKey" mapstructure:"secretKey" mdignore:"true"`
	SessionToken          string `json:"sessionToken" mapstructure:"sessionToken" mdignore:"true"`
	AssumeRoleArn         string `json:"assumeRoleArn" mapstructure:"assumeRoleArn" mdignore:"true"`
	AssumeRoleSessionName string `json:"assumeRoleSessionName" mapstructure:"assumeRoleSessionName" mapstructurealiases:"sessionName" mdignore:"true"`
	TrustAnchorArn        string `json:"trustAnchorArn" mapstructure:"trustAnchorArn" mdignore:"true"`
	TrustProfileArn       string `json:"trustProfileArn" mapstructure:"trustProfileArn" mdignore:"true"`

	// Input side, both modes.
	InitialPosition      initialPosition `json:"initialPosition" mapstructure:"initialPosition"`
	InitialTimestamp     string          `json:"initialTimestamp" mapstructure:"initialTimestamp"`
	LeaseTableName       string          `json:"leaseTableName" mapstructure:"leaseTableName"`
	DynamoDBEndpoint     string          `json:"dynamoDBEndpoint" mapstructure:"dynamoDBEndpoint"`
	WorkerID             string          `json:"workerID" mapstructure:"workerID"`
	LeaseDuration        time.Duration   `json:"leaseDuration" mapstructure:"leaseDuration"`
	ShardSyncInterval    time.Duration   `json:"shardSyncInterval" mapstructure:"shardSyncInterval"`
	LeaseStealing        bool            `json:"leaseStealing,string" mapstructure:"leaseStealing"`
	LeaseProtocol        leases.Protocol `json:"leaseProtocol" mapstructure:"leaseProtocol"`
	RetryInitialInterval time.Duration   `json:"retryInitialInterval" mapstructure:"retryInitialInterval"`
	RetryMaxInterval     time.Duration   `json:"retryMaxInterval" mapstructure:"retryMaxInterval"`
	MaxDeliveryAttempts  int             `json:"maxDeliveryAttempts" mapstructure:"maxDeliveryAttempts"`
	ConcurrencyPerShard  int             `json:"concurrencyPerShard" mapstructure:"concurrencyPerShard"`
	LagWarningThreshold  time.Duration   `json:"lagWarningThreshold" mapstructure:"lagWarningThreshold"`
	CheckpointInterval   time.Duration   `json:"checkpointInterval" mapstructure:"checkpointInterval"`
	DeadLetterStream     string          `json:"deadLetterStream" mapstructure:"deadLetterStream"`
	MaxRecordAge         time.Duration   `json:"maxRecordAge" mapstructure:"maxRecordAge"`

	// Input side, shared mode.
	PollInterval time.Duration `json:"pollInterval" mapstructure:"pollInterval"`
	MaxRecords   int           `json:"maxRecords" mapstructure:"maxRecords"`

	// Input side, queue mode.
	QueueARN               string        `json:"queueARN" mapstructure:"queueARN"`
	QueueName              string        `json:"queueName" mapstructure:"queueName"`
	QueueConcurrency       int           `json:"queueConcurrency" mapstructure:"queueConcurrency"`
	QueueVisibilityTimeout time.Duration `json:"queueVisibilityTimeout" mapstructure:"queueVisibilityTimeout"`
	DeleteQueueOnClose     bool          `json:"deleteQueueOnClose,string" mapstructure:"deleteQueueOnClose"`

	// Input side, extended mode.
	ConsumerARN               string `json:"consumerARN" mapstructure:"consumerARN"`
	DeregisterConsumerOnClose bool   `json:"deregisterConsumerOnClose,string" mapstructure:"deregisterConsumerOnClose"`

	// Output side.
	BatchLinger        time.Duration   `json:"batchLinger" mapstructure:"batchLinger"`
	MaxInFlightBatches int             `json:"maxInFlightBatches" mapstructure:"maxInFlightBatches"`
	Aggregation        aggregationMode `json:"aggregation" mapstructure:"aggregation"`

	// Derived while validating.
	initialTimestamp time.Time
	arnRegion        string // the region of StreamARN
}

// defaultMetadata holds every default; decoding overwrites what the component sets.
func defaultMetadata() kinesisMetadata {
	return kinesisMetadata{
		Mode:                 modeShared,
		InitialPosition:      positionLatest,
		LeaseDuration:        defaultLeaseDuration,
		ShardSyncInterval:    defaultShardSyncInterval,
		LeaseStealing:        true,
		LeaseProtocol:        leases.ProtocolHeartbeat,
		RetryInitialInterval: defaultRetryInitialInterval,
		RetryMaxInterval:     defaultRetryMaxInterval,
		PollInterval:         defaultPollInterval,
		MaxRecords:           defaultMaxRecords,
		BatchLinger:          defaultBatchLinger,
		MaxInFlightBatches:   defaultMaxInFlightBatches,
		ConcurrencyPerShard:  defaultConcurrencyPerShard,

		QueueConcurrency:       defaultQueueConcurrency,
		QueueVisibilityTimeout: 30 * time.Second, // the service's own default
		LagWarningThreshold:    defaultLagWarningThreshold,
		CheckpointInterval:     time.Second,
		Aggregation:            aggregationNone,
	}
}

// parseMetadata decodes and validates component properties. The properties map is not modified.
func parseMetadata(props map[string]string) (kinesisMetadata, error) {
	m := defaultMetadata()
	// The decoder rewrites alias keys in the map it is given; work on a copy so a failed Init
	// leaves the caller's metadata as it was.
	if err := kitmd.DecodeMetadata(maps.Clone(props), &m); err != nil {
		return kinesisMetadata{}, fmt.Errorf("kinesis binding error: invalid metadata: %w", err)
	}
	if err := m.validate(); err != nil {
		return kinesisMetadata{}, fmt.Errorf("kinesis binding error: %w", err)
	}
	return m, nil
}

func (m *kinesisMetadata) validate() error {
	m.StreamName = strings.TrimSpace(m.StreamName)
	m.ConsumerName = strings.TrimSpace(m.ConsumerName)
	if err := m.validateStreamARN(); err != nil {
		return err
	}
	if m.StreamName == "" {
		return errors.New("'streamName' is required (or 'streamARN')")
	}
	if err := checkName("streamName", m.StreamName, 1, 128); err != nil {
		return err
	}
	for _, ep := range []struct{ field, value string }{{"endpoint", m.Endpoint}, {"dynamoDBEndpoint", m.DynamoDBEndpoint}} {
		if err := checkEndpoint(ep.field, ep.value); err != nil {
			return err
		}
	}
	if m.ConsumerARN != "" && (!strings.HasPrefix(m.ConsumerARN, "arn:") || !strings.Contains(m.ConsumerARN, "/consumer/")) {
		return errors.New("'consumerARN' must be a stream consumer ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/STREAM/consumer/NAME:TIMESTAMP)")
	}
	if len(m.WorkerID) > maxWorkerIDLength {
		return fmt.Errorf("'workerID' must be at most %d characters", maxWorkerIDLength)
	}

	m.Mode = consumerMode(strings.ToLower(strings.TrimSpace(string(m.Mode))))
	if m.Mode == "" {
		m.Mode = modeShared
	}
	if m.Mode != modeShared && m.Mode != modeExtended && m.Mode != modeQueue {
		return fmt.Errorf("'mode' must be one of %s, %s, %s; got %q", modeShared, modeExtended, modeQueue, m.Mode)
	}

	if err := m.validateInput(); err != nil {
		return err
	}

	if m.BatchLinger < 0 || m.BatchLinger > maxBatchLinger {
		return fmt.Errorf("'batchLinger' must be between 0 (coalescing off) and %s", maxBatchLinger)
	}
	if m.MaxInFlightBatches < 1 {
		return errors.New("'maxInFlightBatches' must be at least 1")
	}
	return m.validateAggregation()
}

func (m *kinesisMetadata) validateAggregation() error {
	m.Aggregation = aggregationMode(strings.ToLower(strings.TrimSpace(string(m.Aggregation))))
	switch m.Aggregation {
	case "":
		m.Aggregation = aggregationNone
	case aggregationNone:
	case aggregationKPL:
		if m.BatchLinger == 0 {
			// Concurrent creates meet only in the coalescer, which batchLinger 0 turns off.
			return errors.New("'aggregation' kpl packs concurrent creates through the coalescer: it needs 'batchLinger' greater than 0")
		}
	default:
		return fmt.Errorf("'aggregation' must be one of %s, %s; got %q", aggregationNone, aggregationKPL, m.Aggregation)
	}
	return nil
}

func (m *kinesisMetadata) validateInput() error {
	m.InitialPosition = initialPosition(strings.ToUpper(strings.TrimSpace(string(m.InitialPosition))))
	switch m.InitialPosition {
	case "":
		m.InitialPosition = positionLatest
	case positionLatest, positionTrimHorizon:
	case positionAtTimestamp:
		if m.InitialTimestamp == "" {
			return errors.New("'initialTimestamp' is required when 'initialPosition' is AT_TIMESTAMP")
		}
	default:
		return fmt.Errorf("'initialPosition' must be one of %s, %s, %s; got %q",
			positionLatest, positionTrimHorizon, positionAtTimestamp, m.InitialPosition)
	}
	if m.InitialTimestamp != "" {
		ts, err := parseTimestamp(m.InitialTimestamp)
		if err != nil {
			return fmt.Errorf("'initialTimestamp' must be RFC 3339 or Unix seconds: %w", err)
		}
		m.initialTimestamp = ts
	}

	if m.LeaseDuration < time.Second || m.LeaseDuration > maxLeaseDuration {
		return fmt.Errorf("'leaseDuration' must be between 1s and %s", maxLeaseDuration)
	}
	if m.ShardSyncInterval < 100*time.Millisecond || m.ShardSyncInterval > maxInterval {
		return fmt.Errorf("'shardSyncInterval' must be between 100ms and %s", maxInterval)
	}
	if m.ShardSyncInterval > m.LeaseDuration/2 {
		// A lease handed over waits for the claimant's next pass; other replicas judge it dead after
		// leaseDuration, so passes must come well within it.
		return fmt.Errorf("'shardSyncInterval' (%s) must be at most half of 'leaseDuration' (%s)", m.ShardSyncInterval, m.LeaseDuration)
	}
	if m.RetryInitialInterval <= 0 {
		return errors.New("'retryInitialInterval' must be greater than 0")
	}
	if m.RetryMaxInterval < m.RetryInitialInterval {
		return errors.New("'retryMaxInterval' must be at least 'retryInitialInterval'")
	}
	if m.RetryMaxInterval > maxInterval {
		return fmt.Errorf("'retryMaxInterval' must be at most %s", maxInterval)
	}
	if m.MaxDeliveryAttempts < 0 {
		return errors.New("'maxDeliveryAttempts' must not be negative (0 retries until the record succeeds)")
	}
	if m.ConcurrencyPerShard < 1 || m.ConcurrencyPerShard > maxConcurrencyPerShard {
		return fmt.Errorf("'concurrencyPerShard' must be between 1 (one record of a shard at a time) and %d", maxConcurrencyPerShard)
	}
	m.LeaseProtocol = leases.Protocol(strings.ToLower(strings.TrimSpace(string(m.LeaseProtocol))))
	switch m.LeaseProtocol {
	case "":
		m.LeaseProtocol = leases.ProtocolHeartbeat
	case leases.ProtocolHeartbeat, leases.ProtocolRenewal:
	default:
		return fmt.Errorf("'leaseProtocol' must be one of %s, %s; got %q", leases.ProtocolHeartbeat, leases.ProtocolRenewal, m.LeaseProtocol)
	}
	if m.CheckpointInterval < 100*time.Millisecond || m.CheckpointInterval > maxInterval {
		return fmt.Errorf("'checkpointInterval' must be between 100ms and %s", maxInterval)
	}
	if m.LagWarningThreshold < 0 || m.LagWarningThreshold > maxRetention {
		return fmt.Errorf("'lagWarningThreshold' must be between 0 (no lag warning) and %s", maxRetention)
	}
	if err := m.validateDeadLetters(); err != nil {
		return err
	}
	if err := m.validateQueue(); err != nil {
		return err
	}
	if m.PollInterval < minPollInterval || m.PollInterval > maxInterval {
		return fmt.Errorf("'pollInterval' must be between %s (AWS allows 5 GetRecords calls per second per shard) and %s", minPollInterval, maxInterval)
	}
	if m.MaxRecords < 1 || m.MaxRecords > maxMaxRecords {
		return fmt.Errorf("'maxRecords' must be between 1 and %d", maxMaxRecords)
	}
	return nil
}

func (m *kinesisMetadata) validateDeadLetters() error {
	m.DeadLetterStream = strings.TrimSpace(m.DeadLetterStream)
	if m.MaxRecordAge != 0 && (m.MaxRecordAge < time.Second || m.MaxRecordAge > maxRetention) {
		return fmt.Errorf("'maxRecordAge' must be 0 (no age limit) or between 1s and %s", maxRetention)
	}
	if m.DeadLetterStream == "" {
		return nil
	}
	if err := checkName("deadLetterStream", m.DeadLetterStream, 1, 128); err != nil {
		return err
	}
	if m.DeadLetterStream == m.StreamName {
		return errors.New("'deadLetterStream' must not be 'streamName': the binding would read its own dead letters")
	}
	if m.MaxDeliveryAttempts == 0 {
		return errors.New("'deadLetterStream' requires 'maxDeliveryAttempts' > 0: with 0 a failing record is retried for ever and never dead-lettered")
	}
	return nil
}

// Queue mode's bounds: AWS's visibility timeout is 0 to 12 h, in seconds.
const (
	defaultQueueConcurrency = 32
	maxQueueConcurrency     = 1000
	maxQueueVisibility      = 12 * time.Hour
	// queueNameMaxLength is AWS's limit for QueueName.
	queueNameMaxLength = 128
)

// queueARNPattern is a Kinesis queue ARN: arn:aws:kinesis:REGION:ACCOUNT:queue/ID.
var queueARNPattern = regexp.MustCompile(`^arn:aws[a-z-]*:kinesis:[a-z0-9-]+:[0-9]{12}:queue/\S+$`)

// validateQueue checks queue mode's fields, and the fields that mean something else there.
func (m *kinesisMetadata) validateQueue() error {
	m.QueueARN, m.QueueName = strings.TrimSpace(m.QueueARN), strings.TrimSpace(m.QueueName)
	if m.QueueARN != "" && !queueARNPattern.MatchString(m.QueueARN) {
		return fmt.Errorf("'queueARN' must be a Kinesis queue ARN (arn:aws:kinesis:REGION:ACCOUNT:queue/ID), got %q", m.QueueARN)
	}
	if m.QueueName != "" {
		if err := checkName("queueName", m.QueueName, 1, queueNameMaxLength); err != nil {
			return err
		}
	}
	if m.QueueConcurrency < 1 || m.QueueConcurrency > maxQueueConcurrency {
		return fmt.Errorf("'queueConcurrency' must be between 1 and %d", maxQueueConcurrency)
	}
	if m.QueueVisibilityTimeout < time.Second || m.QueueVisibilityTimeout > maxQueueVisibility {
		return fmt.Errorf("'queueVisibilityTimeout' must be between 1s and %s", maxQueueVisibility)
	}
	if m.Mode != modeQueue {
		return nil
	}
	// The queue keeps records given up on in its own dead-letter state (maxDeliveryAttempts sets
	// after how many receives), where they can be read and restored; a stream of dead letters would
	// be a second place for them, and the queue has no record age to act on before delivery.
	if m.DeadLetterStream != "" {
		return errors.New("'deadLetterStream' is not used in mode queue: the queue keeps records given up on in its own dead-letter state (see 'maxDeliveryAttempts')")
	}
	if m.MaxRecordAge != 0 {
		return errors.New("'maxRecordAge' is not used in mode queue: records leave the queue when the stream's retention ends")
	}
	return nil
}

// queueName is the queue mode's queue: queueName, else consumerName.
func (m *kinesisMetadata) queueName() string {
	if m.QueueName != "" {
		return m.QueueName
	}
	return m.ConsumerName
}

// inputReady reports what Read needs that Init does not: output-only components need no consumer name.
func (m *kinesisMetadata) inputReady() error {
	if m.Mode == modeQueue {
		if m.QueueARN == "" && m.queueName() == "" {
			return errors.New("kinesis binding error: mode queue needs 'queueARN', 'queueName' or 'consumerName' (the queue's default name)")
		}
		if m.QueueARN == "" && m.QueueName == "" {
			if err := checkName("consumerName (the default queue name)", m.ConsumerName, 1, queueNameMaxLength); err != nil {
				return fmt.Errorf("kinesis binding error: %w", err)
			}
		}
		return nil
	}
	if m.ConsumerName == "" {
		return errors.New("kinesis binding error: 'consumerName' is required by the input binding")
	}
	if err := checkName("consumerName", m.ConsumerName, 1, 128); err != nil {
		return fmt.Errorf("kinesis binding error: %w", err)
	}
	// The lease table defaults to consumerName, so its rules apply to consumerName too.
	field := "leaseTableName"
	if m.LeaseTableName == "" {
		field = "consumerName (the default lease table name)"
	}
	if err := checkName(field, m.leaseTable(), 3, 255); err != nil {
		return fmt.Errorf("kinesis binding error: %w", err)
	}
	return nil
}

// checkName applies the naming rule Kinesis (streams, consumers) and DynamoDB (tables) share.
func checkName(field, value string, minLen, maxLen int) error {
	if len(value) < minLen || len(value) > maxLen {
		return fmt.Errorf("'%s' must be %d to %d characters, got %d", field, minLen, maxLen, len(value))
	}
	for _, r := range value {
		if !isNameChar(r) {
			return fmt.Errorf("'%s' may contain only letters, digits, '_', '.' and '-'", field)
		}
	}
	return nil
}

func isNameChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-'
}

// checkEndpoint accepts an empty value (the AWS endpoint) or an absolute http(s) URL.
func checkEndpoint(field, value string) error {
	if value == "" {
		return nil
	}
	u, err := url.Parse(value)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("'%s' must be an http or https URL such as https://kinesis.us-east-1.amazonaws.com", field)
	}
	return nil
}

// leaseTable defaults to consumerName, as upstream, so existing checkpoints are kept.
func (m *kinesisMetadata) leaseTable() string {
	if m.LeaseTableName != "" {
		return m.LeaseTableName
	}
	return m.ConsumerName
}

// dynamoDBEndpoint defaults to the Kinesis endpoint, as upstream.
func (m *kinesisMetadata) dynamoDBEndpoint() string {
	if m.DynamoDBEndpoint != "" {
		return m.DynamoDBEndpoint
	}
	return m.Endpoint
}

// streamARNPattern is a Kinesis stream ARN: partition, region, account, stream name.
var streamARNPattern = regexp.MustCompile(`^arn:(aws[a-z-]*):kinesis:([a-z0-9-]+):([0-9]{12}):stream/([a-zA-Z0-9_.-]{1,128})$`)

// validateStreamARN checks streamARN and takes the stream's name and region from it. streamName
// may be set too, to the same stream: a component that names both keeps working when one is
// removed.
func (m *kinesisMetadata) validateStreamARN() error {
	m.StreamARN = strings.TrimSpace(m.StreamARN)
	if m.StreamARN == "" {
		return nil
	}
	parts := streamARNPattern.FindStringSubmatch(m.StreamARN)
	if parts == nil {
		return fmt.Errorf("'streamARN' must be a Kinesis stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME), got %q", m.StreamARN)
	}
	name := parts[4]
	if m.StreamName != "" && m.StreamName != name {
		return fmt.Errorf("'streamName' %q and 'streamARN' (stream %q) name different streams; set one of them", m.StreamName, name)
	}
	m.StreamName, m.arnRegion = name, parts[2]
	return nil
}

func (m *kinesisMetadata) authOptions(log logger.Logger, props map[string]string) awsauth.Options {
	return awsauth.Options{
		Logger:                log,
		Properties:            props,
		Region:                cmp.Or(m.Region, m.arnRegion), // the stream's region unless one is set
		Endpoint:              m.Endpoint,
		AccessKey:             m.AccessKey,
		SecretKey:             m.SecretKey,
		SessionToken:          m.SessionToken,
		AssumeRoleArn:         m.AssumeRoleArn,
		AssumeRoleSessionName: m.AssumeRoleSessionName,
		TrustAnchorArn:        m.TrustAnchorArn,
		TrustProfileArn:       m.TrustProfileArn,
	}
}

func parseTimestamp(s string) (time.Time, error) {
	if ts, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return ts, nil
	}
	secs, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("cannot parse %q", s)
	}
	if secs < 0 {
		return time.Time{}, errors.New("must not be negative")
	}
	return time.Unix(secs, 0).UTC(), nil
}
