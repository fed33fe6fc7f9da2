package queue

import (
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// Read metadata keys of a record delivered in queue mode.
const (
	MetaRecordID              = "recordId"
	MetaReceiveCount          = "receiveCount"
	MetaPartitionKey          = "partitionKey"
	MetaArrivalTimestamp      = "approximateArrivalTimestamp"
	MetaFirstReceiveTimestamp = "firstReceiveTimestamp"
	MetaQueueARN              = "queueARN"
	MetaStreamName            = "streamName"

	// TimeLayout is RFC 3339 with milliseconds, as the other modes give arrival times.
	TimeLayout = "2006-01-02T15:04:05.000Z07:00"
)

func (c *Consumer) metadata(rec *types.QueueRecord) map[string]string {
	md := map[string]string{
		MetaRecordID:     aws.ToString(rec.RecordId),
		MetaReceiveCount: strconv.Itoa(int(aws.ToInt32(rec.ReceiveCount))),
		MetaQueueARN:     c.cfg.Queue.ARN,
		MetaStreamName:   c.cfg.Stream,
	}
	if rec.PartitionKey != nil {
		md[MetaPartitionKey] = *rec.PartitionKey
	}
	if t := rec.ApproximateArrivalTimestamp; t != nil {
		md[MetaArrivalTimestamp] = t.UTC().Format(TimeLayout)
	}
	if t := rec.FirstReceiveTimestamp; t != nil {
		md[MetaFirstReceiveTimestamp] = t.UTC().Format(TimeLayout)
	}
	return md
}
