package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// writeStmts are prepared once on the writer connection; SQLite then skips
// parsing and planning on every commit. The SQL lives beside the code that
// runs it.
type writeStmts struct {
	begin, commit, rollback        *sql.Stmt
	savepoint, release, rollbackTo *sql.Stmt

	partitionGet, headSet             *sql.Stmt
	streamGet, streamSet, eventInsert *sql.Stmt
	keyGet, keyPut, keyDeleteExpired  *sql.Stmt
	taskInsert, taskDelete            *sql.Stmt
	taskClaimable, taskClaim          *sql.Stmt
	taskHeartbeat, taskRelease        *sql.Stmt
	timerInsert, timerDelete          *sql.Stmt
	consumerSet                       *sql.Stmt
	sagaUpsert, sagaEnded, sagaDelete *sql.Stmt
	streamEventsDelete, streamDelete  *sql.Stmt
	leaseGet, leaseSet                *sql.Stmt
	definitionGet, definitionInsert   *sql.Stmt
	definitionAny, definitionLive     *sql.Stmt

	topicExists, messageInsert, fanOut           *sql.Stmt
	sweepDeliveries, messageDelete               *sql.Stmt
	deliveryClaimable, deliveryClaim             *sql.Stmt
	deliveryDelete, deliveryAck, deliveryGet     *sql.Stmt
	deliveryHeartbeat, deliveryNack, unblockNext *sql.Stmt
	deadLetterInsert                             *sql.Stmt
}

func (s *writeStmts) list() []stmtSQL {
	return []stmtSQL{
		{&s.begin, "BEGIN IMMEDIATE"},
		{&s.commit, "COMMIT"},
		{&s.rollback, "ROLLBACK"},
		{&s.savepoint, "SAVEPOINT op"},
		{&s.release, "RELEASE op"},
		{&s.rollbackTo, "ROLLBACK TO op"},
		{&s.partitionGet, sqlPartitionGet},
		{&s.headSet, sqlHeadSet},
		{&s.streamGet, sqlStreamGet},
		{&s.streamSet, sqlStreamSet},
		{&s.eventInsert, sqlEventInsert},
		{&s.keyGet, sqlKeyGet},
		{&s.keyPut, sqlKeyPut},
		{&s.keyDeleteExpired, sqlKeyDeleteExpired},
		{&s.taskInsert, sqlTaskInsert},
		{&s.taskDelete, sqlTaskDelete},
		{&s.taskClaimable, sqlTaskClaimable},
		{&s.taskClaim, sqlTaskClaim},
		{&s.taskHeartbeat, sqlTaskHeartbeat},
		{&s.taskRelease, sqlTaskRelease},
		{&s.timerInsert, sqlTimerInsert},
		{&s.timerDelete, sqlTimerDelete},
		{&s.consumerSet, sqlConsumerSet},
		{&s.sagaUpsert, sqlSagaUpsert},
		{&s.sagaEnded, sqlSagaEnded},
		{&s.sagaDelete, sqlSagaDelete},
		{&s.streamEventsDelete, sqlStreamEventsDelete},
		{&s.streamDelete, sqlStreamDelete},
		{&s.leaseGet, sqlLeaseGet},
		{&s.leaseSet, sqlLeaseSet},
		{&s.definitionGet, sqlDefinitionGet},
		{&s.definitionInsert, sqlDefinitionInsert},
		{&s.definitionAny, sqlDefinitionAny},
		{&s.definitionLive, sqlDefinitionLive},
		{&s.topicExists, sqlTopicExists},
		{&s.messageInsert, sqlMessageInsert},
		{&s.fanOut, sqlFanOut},
		{&s.sweepDeliveries, sqlSweepDeliveries},
		{&s.messageDelete, sqlMessageDelete},
		{&s.deliveryClaimable, sqlDeliveryClaimable},
		{&s.deliveryClaim, sqlDeliveryClaim},
		{&s.deliveryDelete, sqlDeliveryDelete},
		{&s.deliveryAck, sqlDeliveryAck},
		{&s.deliveryGet, sqlDeliveryGet},
		{&s.deliveryHeartbeat, sqlDeliveryHeartbeat},
		{&s.deliveryNack, sqlDeliveryNack},
		{&s.unblockNext, sqlUnblockNext},
		{&s.deadLetterInsert, sqlDeadLetterInsert},
	}
}

func (s *writeStmts) prepare(ctx context.Context, conn *sql.Conn) error {
	for _, st := range s.list() {
		p, err := conn.PrepareContext(ctx, st.sql)
		if err != nil {
			s.close()
			return fmt.Errorf("sqlite: prepare %q: %w", st.sql, err)
		}
		*st.dst = p
	}
	return nil
}

func (s *writeStmts) close() { closeStmts(s.list()) }

// readStmts are prepared on the read pool; database/sql prepares each on a
// connection the first time it runs there.
type readStmts struct {
	streamRead, streamInfo, partitionRead, partitionHead *sql.Stmt
	keyGet                                               *sql.Stmt
	taskGet, queueStats                                  *sql.Stmt
	timerDue, timerList                                  *sql.Stmt
	consumerGet                                          *sql.Stmt
	leaseList                                            *sql.Stmt
	definitionGet, definitionLatest, definitionList      *sql.Stmt
	sagaGet                                              *sql.Stmt
	messageRead, messageHead                             *sql.Stmt
}

func (s *readStmts) list() []stmtSQL {
	return []stmtSQL{
		{&s.streamRead, sqlStreamRead},
		{&s.streamInfo, sqlStreamGet},
		{&s.partitionRead, sqlPartitionRead},
		{&s.partitionHead, sqlPartitionHead},
		{&s.keyGet, sqlKeyGet},
		{&s.taskGet, sqlTaskGet},
		{&s.queueStats, sqlQueueStats},
		{&s.timerDue, sqlTimerDue},
		{&s.timerList, sqlTimerList},
		{&s.consumerGet, sqlConsumerGet},
		{&s.leaseList, sqlLeaseList},
		{&s.definitionGet, sqlDefinitionGet},
		{&s.definitionLatest, sqlDefinitionLatest},
		{&s.definitionList, sqlDefinitionList},
		{&s.sagaGet, sqlSagaGet},
		{&s.messageRead, sqlMessageRead},
		{&s.messageHead, sqlMessageHead},
	}
}

func (s *readStmts) prepare(ctx context.Context, db *sql.DB) error {
	for _, st := range s.list() {
		p, err := db.PrepareContext(ctx, st.sql)
		if err != nil {
			return fmt.Errorf("sqlite: prepare %q: %w", st.sql, err)
		}
		*st.dst = p
	}
	return nil
}

func (s *readStmts) close() error { return closeStmts(s.list()) }

type stmtSQL struct {
	dst **sql.Stmt
	sql string
}

func closeStmts(list []stmtSQL) error {
	var errs []error
	for _, st := range list {
		// The pointer is kept: a read racing with Close, or made after it,
		// then gets database/sql's "statement is closed" error rather than
		// a nil dereference. Closing a closed statement is a no-op.
		if *st.dst != nil {
			errs = append(errs, (*st.dst).Close())
		}
	}
	return errors.Join(errs...)
}
